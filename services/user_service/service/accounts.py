"""User and API key use cases as transaction functions."""

from __future__ import annotations

from services.user_service.domain import api_keys
from services.user_service.domain.model import ApiKey, User, UserStatus
from services.user_service.service.money import require_user
from services.user_service.service.ports import Repository
from shared.errors import AlreadyExists, NotFound, Unauthenticated


class UsernameTaken(AlreadyExists):
    """Another user has this username."""

    default_reason = "USERNAME_TAKEN"


class EmailTaken(AlreadyExists):
    """Another user has this e-mail address."""

    default_reason = "EMAIL_TAKEN"


class ApiKeyNotFound(NotFound):
    """No API key has this id."""

    default_reason = "API_KEY_NOT_FOUND"


class AuthenticationFailed(Unauthenticated):
    """A presented credential is not valid. The client sees one generic message; the log sees why."""

    default_reason = "INVALID_CREDENTIALS"

    def __init__(self, why: str, key_id_prefix: str = ""):
        super().__init__("invalid or revoked credentials")
        self.why = why
        self.key_id_prefix = key_id_prefix


def create_user(repo: Repository, user: User) -> User:
    """Insert a new user; a taken username or e-mail gives ALREADY_EXISTS."""
    if repo.username_taken(user.username):
        raise UsernameTaken(f"username {user.username!r} is already taken", metadata={"field": "username"})
    if repo.email_taken(user.email):
        raise EmailTaken("e-mail address is already in use", metadata={"field": "email"})
    repo.insert_user(user)
    return user


def update_user_status(repo: Repository, user_id: str, status: UserStatus, now_ms: int) -> User:
    """Change a user's status (a no-op if unchanged) and return the user after it."""
    user = require_user(repo, user_id)
    if user.status is not status:
        repo.update_user_status(user_id, status, now_ms)
        user = require_user(repo, user_id)
    return user


def create_api_key(repo: Repository, user_id: str, label: str, issued: api_keys.IssuedKey, now_ms: int) -> ApiKey:
    """Store a new key's hash for an existing user."""
    require_user(repo, user_id)
    key = ApiKey(key_id=issued.key_id, user_id=user_id, label=label, secret_hash=issued.secret_hash, create_ms=now_ms)
    repo.insert_api_key(key)
    return key


def require_api_key(repo: Repository, key_id: str) -> ApiKey:
    """Return the key record or raise NOT_FOUND."""
    key = repo.get_api_key(key_id)
    if key is None:
        raise ApiKeyNotFound(f"API key {key_id} not found", metadata={"key_id": key_id})
    return key


def revoke_api_key(repo: Repository, key_id: str, now_ms: int) -> ApiKey:
    """Revoke a key; revoking again keeps the first revocation time."""
    key = require_api_key(repo, key_id)
    if not key.revoked:
        repo.revoke_api_key(key_id, now_ms)
        key = require_api_key(repo, key_id)
    return key


def check_api_key(repo: Repository, api_key: str) -> tuple[ApiKey, User]:
    """Resolve a presented key to its record and user, or raise AuthenticationFailed."""
    presented = api_keys.parse(api_key)
    if presented is None:
        raise AuthenticationFailed("malformed API key")
    key = repo.get_api_key(presented.key_id)
    if key is None:
        raise AuthenticationFailed("unknown API key", presented.id_prefix)
    if not api_keys.verify(presented, key.secret_hash):
        raise AuthenticationFailed("wrong API key secret", presented.id_prefix)
    if key.revoked:
        raise AuthenticationFailed("revoked API key", presented.id_prefix)
    user = repo.get_user(key.user_id)
    if user is None:  # pragma: no cover - a foreign key prevents it
        raise AuthenticationFailed("API key of a missing user", presented.id_prefix)
    return key, user


def touch_login(repo: Repository, key_id: str, user_id: str, now_ms: int) -> User:
    """Record a successful authentication on the key and the user; return the user after it."""
    repo.touch_login(key_id, user_id, now_ms)
    return require_user(repo, user_id)
