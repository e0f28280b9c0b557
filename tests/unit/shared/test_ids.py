import threading

from shared.ids import new_id, new_ulid


def test_ids_made_concurrently_never_collide_and_sort_in_creation_order_per_thread():
    per_thread: list[list[str]] = []

    def make():
        ids = [new_ulid() for _ in range(5000)]
        per_thread.append(ids)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for ids in per_thread for i in ids]
    assert len(set(everything)) == len(everything) == 40_000
    for ids in per_thread:
        assert ids == sorted(ids)


def test_prefixed_id_is_a_valid_binance_client_order_id():
    order_id = new_id("ord")
    assert len(order_id) <= 36
    assert all(c.isalnum() or c in "-_" for c in order_id)
