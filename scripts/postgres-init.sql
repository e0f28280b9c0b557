-- One database per service on the compose `postgres` profile's server (run once, when its volume is new).
-- The server was initialised with --locale=C, so these use the bytewise collation the services require.
CREATE DATABASE order_service;
CREATE DATABASE user_service;
CREATE DATABASE exchange_gateway;
