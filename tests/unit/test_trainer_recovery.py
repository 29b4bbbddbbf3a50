"""Reading the trainer's state back at start, on the in-memory driver."""

from __future__ import annotations

import pytest

from bus.clients.base import TransientBusError
from bus.clients.memory import MemoryBroker
from bus.messages import ModelVersion
from bus.table import Table
from bus.topics import Topics
from core.shutdown import StopFlag
from trainer.recovery import read_checkpoint, read_start, read_versions
from trainer.state import Checkpoint, encode_checkpoint, part_key

TOPICS = Topics()


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(TOPICS.points, 2)
    broker.create_topic(TOPICS.models, 2)
    broker.create_topic(TOPICS.trainer_state, 3)
    return broker


def write_checkpoint(
    broker: MemoryBroker, seq: int, partition: int, count: int = 0, **versions: int
) -> None:
    checkpoint = Checkpoint(
        "g", TOPICS.points, seq=seq, count=count, offsets={0: seq}, versions=versions
    )
    for key, value, headers in encode_checkpoint(checkpoint):
        broker.produce(TOPICS.trainer_state, value, key=key, partition=partition, headers=headers)


def write_version(broker: MemoryBroker, name: str, version: int, partition: int) -> None:
    model = ModelVersion(name, 1, "multivariate", 2, {}, {"count": 0}, {}, 0)
    value = model.to_bytes().replace(b'"version":1', b'"version":%d' % version)
    broker.produce(TOPICS.models, value, key=name.encode(), partition=partition)


def test_no_checkpoint_goes_to_a_partition_chosen_by_the_group(broker: MemoryBroker) -> None:
    found = read_checkpoint(broker.driver(), TOPICS.trainer_state, "g", StopFlag())
    assert (found.checkpoint, found.parts) == (None, 0)
    again = read_checkpoint(broker.driver(), TOPICS.trainer_state, "g", StopFlag())
    assert found.partition == again.partition and 0 <= found.partition < 3


def test_the_newest_checkpoint_wins_wherever_it_is(broker: MemoryBroker) -> None:
    write_checkpoint(broker, seq=7, partition=2)
    write_checkpoint(broker, seq=9, partition=0)
    write_checkpoint(broker, seq=8, partition=1)
    for _ in range(50):  # others' records after it: read back in growing windows
        broker.produce(TOPICS.trainer_state, b"{}", key=part_key("other", 0), partition=0)
    found = read_checkpoint(broker.driver(), TOPICS.trainer_state, "g", StopFlag())
    assert found.checkpoint is not None
    assert (found.checkpoint.seq, found.partition, found.parts) == (9, 0, 1)


def test_versions_are_the_highest_of_each_name_in_every_partition(broker: MemoryBroker) -> None:
    write_version(broker, "a", 3, 0)
    write_version(broker, "a", 5, 1)
    write_version(broker, "b", 2, 1)
    write_version(broker, "b", 2**60, 0)  # beyond the contract: ignored
    write_version(broker, "c", 9, 0)  # not asked for
    broker.produce(TOPICS.models, b"not json", key=b"a", partition=0)
    found = read_versions(broker.driver(), TOPICS.models, ["a", "b", "d"], StopFlag())
    assert found == {"a": 5, "b": 2}


def test_start_reads_the_checkpoint_its_versions_and_the_input_positions(
    broker: MemoryBroker,
) -> None:
    write_checkpoint(broker, seq=4, partition=1, count=10, gone=2)
    write_version(broker, "gone", 6, 0)  # a model the checkpoint knows, no longer configured
    for _ in range(3):
        broker.produce(TOPICS.points, b"{}", partition=1)
    start = read_start(
        broker.driver(), TOPICS, "g", names=["a"], partitions=[0, 1], stop=StopFlag()
    )
    assert start.found.checkpoint is not None and start.found.checkpoint.count == 10
    assert start.versions == {"gone": 6}  # "a" has none yet
    assert start.positions.ends == {0: 0, 1: 3}
    assert start.positions.committed == {0: None, 1: None}


def test_a_fault_while_reading_back_is_transient(broker: MemoryBroker) -> None:
    write_checkpoint(broker, seq=1, partition=0)
    broker.fail_next("poll", TransientBusError("broker gone"))
    with pytest.raises(TransientBusError, match=r"reading trainer-state\[0\] back failed"):
        read_checkpoint(broker.driver(), TOPICS.trainer_state, "g", StopFlag())


def test_a_stop_ends_reading_back_at_once(broker: MemoryBroker) -> None:
    for i in range(100):
        broker.produce(TOPICS.trainer_state, b"%d" % i, key=b"k", partition=0)
    stop = StopFlag()
    stop.set()
    with Table(broker.driver(), TOPICS.trainer_state, stop=stop) as table:
        assert table.read_back(0, lambda records: False, first_window=10) == []
    assert broker.calls.get("poll", 0) == 0
