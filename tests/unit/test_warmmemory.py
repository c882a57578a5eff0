"""The warm memory's policy (handler.warmmemory): which machines keep it, how much, and how launches,
refills and pressure move it; over a stateful fake of the memory itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.nodeinfo import MemInfo, meminfo
from handler.warmmemory import (
    GIB,
    MIB,
    STEP,
    FakeMemory,
    WarmMemory,
    WarmMemoryError,
    auto_size,
    cgroup_dirs,
    goal,
    headroom,
    parse,
    reclaiming_host,
    within_limits,
)
from proto.quantity import parse_bytes

BALLOON_REPORTING = "01100101" + "0" * 24 + "1" + "0" * 95  # as this box's Firecracker balloon says


def virtio(sysfs: Path, name: str, device: str, features: str) -> None:
    d = sysfs / "bus" / "virtio" / "devices" / name
    d.mkdir(parents=True)
    (d / "device").write_text(device + "\n")
    (d / "features").write_text(features + "\n")


def test_a_balloon_that_reports_free_pages_makes_a_reclaiming_host(tmp_path: Path) -> None:
    virtio(tmp_path, "virtio1", "0x0002", "1" * 64)  # a disk with every bit: not a balloon
    assert not reclaiming_host(tmp_path)
    virtio(tmp_path, "virtio0", "0x0005", BALLOON_REPORTING)
    assert reclaiming_host(tmp_path)


def test_a_balloon_without_free_page_reporting_or_no_virtio_at_all_is_not(tmp_path: Path) -> None:
    assert not reclaiming_host(tmp_path)  # bare metal: no virtio bus
    virtio(tmp_path, "virtio0", "0x0005", "01100001" + "0" * 120)  # stats and deflate-on-OOM only
    assert not reclaiming_host(tmp_path)
    virtio(tmp_path, "virtio3", "garbage", BALLOON_REPORTING)  # unreadable: passed over
    assert not reclaiming_host(tmp_path)


def test_auto_keeps_an_eighth_of_memory_at_most_3_gib_and_none_where_the_host_takes_nothing_back() -> None:
    assert auto_size(24 * GIB, True) == 3 * GIB
    assert auto_size(8 * GIB, True) == GIB
    assert auto_size(8 * GIB + 5 * MIB, True) == GIB  # whole steps
    assert auto_size(24 * GIB, False) == 0


def test_the_goal_leaves_headroom_and_grows_by_whole_steps() -> None:
    room = headroom(24 * GIB)
    assert room == 3 * GIB
    assert goal(3 * GIB, 0, 20 * GIB, room) == 3 * GIB
    assert goal(3 * GIB, GIB, 3 * GIB + 100 * MIB, room) == GIB + 96 * MIB  # 100 MiB of room: 3 steps
    assert goal(3 * GIB, GIB, room - 200 * MIB, room) == GIB - 200 * MIB  # pressure: give 200 MiB back
    assert goal(3 * GIB, GIB, 0, room) == 0
    assert goal(0, 0, 20 * GIB, room) == 0
    assert goal(GIB, GIB - 80 * MIB, 20 * GIB, room) == GIB  # room enough: to its size, the last step short


def test_the_option_reads_auto_none_and_sizes() -> None:
    total = 24 * GIB
    assert parse("auto", parse_bytes, total) is None
    assert parse("0", parse_bytes, total) == 0
    assert parse("2Gi", parse_bytes, total) == 2 * GIB
    assert parse("100Mi", parse_bytes, total) == 96 * MIB  # whole steps
    assert parse("12Gi", parse_bytes, total) == 12 * GIB
    for bad in ("lots", "-1Gi", "1Gi; rm -rf /", "", "13Gi", "1Ti"):
        with pytest.raises(WarmMemoryError, match="--warm-memory"):
            parse(bad, parse_bytes, total)


def test_meminfo_is_read_in_bytes() -> None:
    text = "MemTotal:       24576000 kB\nMemFree:        1000 kB\nMemAvailable:   20480000 kB\n"
    assert meminfo(text) == MemInfo(24576000 * 1024, 20480000 * 1024)
    with pytest.raises(RuntimeError, match="no MemAvailable in /proc/meminfo"):
        meminfo("MemTotal:       24576000 kB\n")


def test_a_cgroup_limit_bounds_what_the_machine_offers() -> None:
    machine = MemInfo(24 * GIB, 20 * GIB)
    assert within_limits(machine, []) == machine
    assert within_limits(machine, [("max\n", "123\n"), ("9223372036854771712\n", "5\n")]) == machine  # no limits
    # a container of 4 GiB using 3, in a unit of 8 GiB: 1 GiB available, 4 in all
    assert within_limits(machine, [(f"{4 * GIB}\n", f"{3 * GIB}\n"), (f"{8 * GIB}", f"{3 * GIB}")]) == \
        MemInfo(4 * GIB, GIB)
    assert within_limits(machine, [(f"{GIB}", f"{2 * GIB}")]).available == 0  # over its limit: none, not less
    assert auto_size(within_limits(machine, [(f"{4 * GIB}", "0")]).total, True) == 512 * MIB


def test_the_limits_are_read_where_the_memory_controller_is() -> None:
    root = Path("/sys/fs/cgroup")
    hybrid = "9:pids:/\n4:memory:/lab/node1\n1:cpu:/\n0::/\n"
    assert cgroup_dirs(hybrid, root) == ([root / "memory/lab/node1", root / "memory/lab", root / "memory"],
                                         "memory.limit_in_bytes", "memory.usage_in_bytes")
    unified = "0::/system.slice/virtbus-handler.service\n"
    assert cgroup_dirs(unified, root) == ([root / "system.slice/virtbus-handler.service", root / "system.slice",
                                           root], "memory.max", "memory.current")
    assert cgroup_dirs("", root) == ([root], "memory.max", "memory.current")


class Box:
    """The machine's memory as the reserve sees it: available falls as it holds more."""

    def __init__(self, total: int, available: int) -> None:
        self.total = total
        self.free = available  # available with nothing held
        self.warm: WarmMemory | None = None

    def read(self) -> MemInfo:
        held = self.warm.held if self.warm else 0
        return MemInfo(self.total, self.free - held)


def warm_on(box: Box, size: int, memory: FakeMemory | None = None) -> tuple[WarmMemory, FakeMemory]:
    memory = memory or FakeMemory()
    box.warm = WarmMemory(memory, size, box.read)
    return box.warm, memory


def touched_is_held(memory: FakeMemory, warm: WarmMemory) -> bool:
    return memory.touched == set(range(0, warm.held, MIB))


def test_a_refill_touches_up_to_its_size_a_step_at_a_time_pausing_as_long_as_each_took() -> None:
    box = Box(24 * GIB, 20 * GIB)
    warm, memory = warm_on(box, GIB)
    assert warm.wants_more()
    pauses: list[float] = []
    assert warm.refill(lambda: True, pauses.append) == GIB
    assert warm.held == GIB and touched_is_held(memory, warm)
    assert memory.calls == [("populate", i * STEP, STEP) for i in range(GIB // STEP)]
    assert len(pauses) == GIB // STEP and all(p >= 0 for p in pauses)
    assert not warm.wants_more()
    assert warm.refill(lambda: True, pauses.append) == 0


def test_each_launch_takes_its_worth_from_the_top() -> None:
    box = Box(24 * GIB, 20 * GIB)
    warm, memory = warm_on(box, GIB)
    warm.refill(lambda: True, lambda _: None)
    assert warm.launch_begins() == 80 * MIB
    assert warm.held == GIB - 80 * MIB and touched_is_held(memory, warm)
    assert warm.relieve() == 0  # room enough: nothing more given back
    assert warm.refill(lambda: True, lambda _: None) == 80 * MIB  # two steps and a half: to the size again
    assert memory.calls[-1] == ("populate", GIB - 16 * MIB, 16 * MIB)
    assert warm.held == GIB and touched_is_held(memory, warm)
    for _ in range(20):
        warm.launch_begins()
    assert warm.held == 0 and memory.touched == set()
    assert warm.launch_begins() == 0  # nothing left: the launch pays for its pages, as without


def test_a_refill_stops_when_the_node_is_busy_or_a_launch_begins() -> None:
    box = Box(24 * GIB, 20 * GIB)
    warm, memory = warm_on(box, GIB)
    looks = iter([True, True, False])
    assert warm.refill(lambda: next(looks), lambda _: None) == 2 * STEP  # busy at the third look

    def a_launch_after_two_steps() -> bool:
        if warm.held == 4 * STEP:
            warm.launch_begins()
        return True
    warm.refill(a_launch_after_two_steps, lambda _: None)
    assert warm.held == 4 * STEP - 80 * MIB and touched_is_held(memory, warm)


class LaunchMidStep(FakeMemory):
    """A launch begins (on another thread) while a refill touches its step."""

    def __init__(self) -> None:
        super().__init__()
        self.warm: WarmMemory | None = None
        self.populates = 0

    def populate(self, offset: int, nbytes: int) -> None:
        super().populate(offset, nbytes)
        self.populates += 1
        if self.populates == 3 and self.warm is not None:
            self.warm.launch_begins()


def test_a_step_touched_while_a_launch_took_from_the_top_is_given_back_too() -> None:
    box = Box(24 * GIB, 20 * GIB)
    memory = LaunchMidStep()
    warm, _ = warm_on(box, GIB, memory)
    memory.warm = warm
    warm.refill(lambda: True, lambda _: None)
    # the two steps held (64 MiB) given to the launch; the third, touched above them, given back too
    assert warm.held == 0
    assert touched_is_held(memory, warm)
    assert memory.calls[-1] == ("discard", 2 * STEP, STEP)


def test_under_pressure_it_gives_back_what_the_node_needs_and_grows_only_into_room_left() -> None:
    box = Box(24 * GIB, 20 * GIB)
    warm, memory = warm_on(box, 3 * GIB)
    warm.refill(lambda: True, lambda _: None)
    assert warm.held == 3 * GIB
    assert warm.relieve() == 0  # 17 GiB still available beside it
    box.free = 4 * GIB  # the guests took 16 GiB: 1 GiB available, headroom 3 GiB
    assert warm.relieve() == 2 * GIB
    assert warm.held == GIB and touched_is_held(memory, warm)
    assert box.read().available == headroom(box.total)
    assert not warm.wants_more() and warm.refill(lambda: True, lambda _: None) == 0
    box.free = 4 * GIB + 100 * MIB  # a little room again: whole steps of it
    assert warm.refill(lambda: True, lambda _: None) == 3 * STEP


def test_release_gives_it_all_back_and_stops_a_refill() -> None:
    box = Box(24 * GIB, 20 * GIB)
    warm, memory = warm_on(box, GIB)

    def released_after_a_step() -> bool:
        if warm.held == STEP:
            warm.release()
        return True
    warm.refill(released_after_a_step, lambda _: None)
    assert warm.held == 0 and memory.touched == set()


def test_the_handler_keeps_what_it_is_asked_for_and_on_auto_what_its_machine_calls_for(tmp_path: Path) -> None:
    from handler.__main__ import main_parser, warm_memory

    assert warm_memory(0, tmp_path) is None
    assert warm_memory(None, tmp_path) is None  # auto, and no balloon here: none
    virtio(tmp_path, "virtio0", "0x0005", BALLOON_REPORTING)
    auto = warm_memory(None, tmp_path)
    assert auto is not None and 0 < auto.size <= 3 * GIB and auto.held == 0  # nothing touched before a refill
    asked = warm_memory(64 * MIB, tmp_path)
    assert asked is not None and asked.size == 64 * MIB
    args = main_parser().parse_args(["--node", "n1", "--warm-memory", "1Gi"])
    assert args.warm_memory == GIB
    with pytest.raises(SystemExit):
        main_parser().parse_args(["--node", "n1", "--warm-memory", "a lot"])
    with pytest.raises(SystemExit):
        main_parser().parse_args(["--node", "n1", "--warm-memory", "64Ti"])  # more than this machine has


def test_prometheus_hears_what_is_held_and_at_most() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from handler.metrics import WarmMemoryCollector

    box = Box(24 * GIB, 20 * GIB)
    warm, _ = warm_on(box, GIB)
    registry = CollectorRegistry()
    registry.register(WarmMemoryCollector("node1", warm))
    warm.refill(lambda: True, lambda _: None)
    warm.launch_begins()
    text = generate_latest(registry).decode()
    assert 'virtbus_node_warm_memory_bytes{node="node1"} 9.89855744e+08' in text, text  # 1 GiB - 80 MiB
    assert 'virtbus_node_warm_memory_size_bytes{node="node1"} 1.073741824e+09' in text, text


def test_the_real_memory_refuses_a_range_outside_it() -> None:
    from handler.warmmemory import AnonymousMemory

    memory = AnonymousMemory(4 * MIB)
    try:
        memory.populate(0, 4 * MIB)
        memory.discard(0, 4 * MIB)
        for offset, nbytes in ((2 * MIB, 4 * MIB), (-MIB, MIB), (4 * MIB, 1)):
            with pytest.raises(ValueError, match="outside the warm memory"):
                memory.populate(offset, nbytes)
            with pytest.raises(ValueError, match="outside the warm memory"):
                memory.discard(offset, nbytes)
    finally:
        memory.close()


class NoRoom(FakeMemory):
    """The kernel finds no memory for the third step, after touching part of it."""

    def populate(self, offset: int, nbytes: int) -> None:
        if offset == 2 * STEP:
            self.touched.update(range(offset, offset + nbytes // 2, MIB))
            raise OSError(12, "Cannot allocate memory")
        super().populate(offset, nbytes)


def test_a_step_the_kernel_has_no_room_for_leaves_nothing_touched_beyond_what_is_held() -> None:
    box = Box(24 * GIB, 20 * GIB)
    warm, memory = warm_on(box, GIB, NoRoom())
    with pytest.raises(OSError, match="Cannot allocate"):
        warm.refill(lambda: True, lambda _: None)
    assert warm.held == 2 * STEP and touched_is_held(memory, warm)
