"""A Binance spot stand-in that speaks Binance's own REST and WebSocket API wire protocol (state in memory)."""

from services.exchange_simulator.app import RunningSimulator, start_simulator
from services.exchange_simulator.config import SimConfig

__all__ = ["RunningSimulator", "SimConfig", "start_simulator"]
