"""gRPC servicer of trading.user.v1.UserService: not built yet, every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

from trading.user.v1 import user_service_pb2_grpc


class UserServiceServicer(user_service_pb2_grpc.UserServiceServicer):
    """The generated base class answers UNIMPLEMENTED for every RPC until the service is built."""
