"""Binance spot boundary: signing, rate limits, wire schemas, enum maps, errors, REST and WebSocket API clients."""
