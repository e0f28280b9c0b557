"""User and API key use cases as transaction functions."""

from __future__ import annotations

from dataclasses import replace

from services.user_service.domain import api_keys
from services.user_service.domain.audit import Actor
from services.user_service.domain.model import ApiKey, User, UserStatus
from services.user_service.service.ledger import require_user
from services.user_service.service.ports import Repository
from shared.errors import AlreadyExists, NotFound, PermissionDenied, Unauthenticated
from shared.timeutil import iso_from_ms


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
    """A presented credential is not valid. The client sees one generic message; the log sees why.

    ``key_id_prefix`` is the start of the presented key's id (a guess's too); ``key_id`` and
    ``user_id`` are set only when the key exists (a wrong secret, a revoked or an expired key).
    """

    default_reason = "INVALID_CREDENTIALS"

    def __init__(
        self,
        why: str,
        key_id_prefix: str = "",
        *,
        key: ApiKey | None = None,
        message: str = "invalid or revoked credentials",
        reason: str | None = None,
    ):
        super().__init__(message, reason=reason)
        self.why = why
        self.key_id_prefix = key_id_prefix
        self.key_id = key.key_id if key is not None else ""
        self.user_id = key.user_id if key is not None else ""


class ApiKeyExpired(AuthenticationFailed):
    """The right secret of a key whose expiry has passed: the client is told it expired."""

    def __init__(self, key: ApiKey, key_id_prefix: str):
        assert key.expire_ms is not None
        super().__init__(
            "expired API key",
            key_id_prefix,
            key=key,
            message=f"API key expired at {iso_from_ms(key.expire_ms)}",
            reason="API_KEY_EXPIRED",
        )


class NotOwnKey(PermissionDenied):
    """A user's key named a key of another user."""

    default_reason = "NOT_OWNER"


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


def create_api_key(
    repo: Repository,
    user_id: str,
    label: str,
    issued: api_keys.IssuedKey,
    now_ms: int,
    *,
    grant: api_keys.Grant | None = None,
) -> ApiKey:
    """Store a new key's hash for an existing user, with its scopes and expiry (default: a trade key)."""
    require_user(repo, user_id)
    key = ApiKey(key_id=issued.key_id, user_id=user_id, label=label, secret_hash=issued.secret_hash, create_ms=now_ms)
    if grant is not None:
        key = replace(key, scopes=grant.scopes, expire_ms=grant.expire_ms)
    repo.insert_api_key(key)
    return key


def require_api_key(repo: Repository, key_id: str) -> ApiKey:
    """Return the key record or raise NOT_FOUND."""
    key = repo.get_api_key(key_id)
    if key is None:
        raise ApiKeyNotFound(f"API key {key_id} not found", metadata={"key_id": key_id})
    return key


def revoke_api_key(repo: Repository, key_id: str, now_ms: int, actor: Actor | None = None) -> ApiKey:
    """Revoke a key; revoking again keeps the first revocation time.

    A user's key (``actor``) may revoke only its own user's keys whose scopes it has itself.
    """
    key = require_api_key(repo, key_id)
    if actor is not None and actor.is_user:
        if key.user_id != actor.user_id:
            raise NotOwnKey("an API key may only revoke keys of its own user", metadata={"field": "key_id"})
        api_keys.check_revoke(key, actor.scopes)
    if not key.revoked:
        repo.revoke_api_key(key_id, now_ms)
        key = require_api_key(repo, key_id)
    return key


def check_api_key(repo: Repository, api_key: str, now_ms: int) -> tuple[ApiKey, User]:
    """Resolve a presented key to its record and user, or raise AuthenticationFailed.

    That a key expired is said (ApiKeyExpired) only to whoever presents its right secret.
    """
    presented = api_keys.parse(api_key)
    if presented is None:
        raise AuthenticationFailed("malformed API key")
    key = repo.get_api_key(presented.key_id)
    if key is None:
        raise AuthenticationFailed("unknown API key", presented.id_prefix)
    if not api_keys.verify(presented, key.secret_hash):
        raise AuthenticationFailed("wrong API key secret", presented.id_prefix, key=key)
    if key.revoked:
        raise AuthenticationFailed("revoked API key", presented.id_prefix, key=key)
    if key.expired(now_ms):
        raise ApiKeyExpired(key, presented.id_prefix)
    user = repo.get_user(key.user_id)
    if user is None:  # pragma: no cover - a foreign key prevents it
        raise AuthenticationFailed("API key of a missing user", presented.id_prefix)
    return key, user


def touch_login(repo: Repository, key_id: str, user_id: str, now_ms: int) -> User:
    """Record a successful authentication on the key and the user; return the user after it."""
    repo.touch_login(key_id, user_id, now_ms)
    return require_user(repo, user_id)
