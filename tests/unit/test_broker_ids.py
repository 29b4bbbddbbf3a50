"""The local broker's KRaft cluster ids."""

from __future__ import annotations

import base64

from streamscore import broker


def test_cluster_ids_never_start_like_an_option() -> None:
    # about one random id in 64 starts with "-", which the storage tool reads as an option
    ids = [broker._cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    for cluster_id in ids[:50]:
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
