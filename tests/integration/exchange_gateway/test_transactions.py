"""What an order costs the journal: the user data stream's reports of what the order's answer
already journaled (NEW, CANCELED) take no transaction of their own."""

from __future__ import annotations

from trading.gateway.v1 import gateway_pb2

from .conftest import Gateway, Sim, eventually


async def test_a_placed_and_cancelled_limit_order_costs_three_journal_transactions(gateway: Gateway, sim: Sim):
    journal, stream = gateway.running.internals.journal, gateway.running.internals.user_stream
    await journal.transact(lambda tx: None)  # start-up writes (if any) are behind us
    batches, events = journal.batches, stream.events

    order = await gateway.submit("tx-1")
    assert order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW
    await eventually(lambda: _after(stream, events + 1), what="the stream's NEW report")
    canceled = await gateway.cancel("tx-1")
    assert canceled.status == gateway_pb2.EXCHANGE_ORDER_STATUS_CANCELED
    await eventually(lambda: _after(stream, events + 2), what="the stream's CANCELED report")
    await journal.transact(lambda tx: None)  # queued after both reports: they have been dealt with

    # Journal before send, the order's answer, the cancel's answer; the two reports cost nothing.
    assert journal.batches - batches == 3 + 1  # + the flush just above
    executions = await gateway.executions(0, 2)
    assert [e.execution_type for e in executions] == [
        gateway_pb2.EXECUTION_TYPE_NEW,
        gateway_pb2.EXECUTION_TYPE_CANCELED,
    ]
    assert len(await gateway.all_executions(settle=0.3)) == 2


async def _after(stream, count: int) -> bool:
    return stream.events >= count
