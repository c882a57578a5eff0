"""What a launch's processes map, read from /proc's text, and what of a remembered list is locked again
(handler.residentfiles' pure parts)."""

from __future__ import annotations

from pathlib import Path

from handler.residentfiles import (
    LOOK_AT,
    PAGE,
    Mapping,
    Remembered,
    RememberedFile,
    file_mappings,
    look_order,
    present_pages,
    recall_plan,
    runs,
)

MAPS = """\
55d0c0000000-55d0c0002000 r--p 00000000 fd:01 1234  /usr/bin/qemu-system-x86_64
55d0c0002000-55d0c0100000 r-xp 00002000 fd:01 1234  /usr/bin/qemu-system-x86_64
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
7f0000100000-7f0000200000 rw-s 00000000 00:01 99  /memfd:qemu (deleted)
7f0000200000-7f0000201000 rw-s 00000000 00:05 88  /dev/kvm
7f0000300000-7f0000301000 r--p 00000000 fd:01 77  /usr/lib/x86_64-linux-gnu/libvirt.so.0.9000.0 (deleted)
7f0000400000-7f0000500000 r--s 00000000 fd:01 66  /var/lib/virtbus/vmis/vm1/disk.img
7f0000600000-7f0000601000 r--p 00003000 fd:01 55  /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0  [stack]
"""


def test_only_the_files_code_comes_from_and_not_the_node_s_state() -> None:
    found = file_mappings(MAPS, skip=(Path("/var/lib/virtbus"),))
    assert found == [
        Mapping(0x55D0C0000000, 0x55D0C0002000, 0, "/usr/bin/qemu-system-x86_64", 1234),
        Mapping(0x55D0C0002000, 0x55D0C0100000, 0x2000, "/usr/bin/qemu-system-x86_64", 1234),
        Mapping(0x7F0000600000, 0x7F0000601000, 0x3000, "/usr/lib/x86_64-linux-gnu/libc.so.6", 55),
    ]
    # without the state directory skipped, a VM's disk mapped by hand would count
    assert "/var/lib/virtbus/vmis/vm1/disk.img" in {m.path for m in file_mappings(MAPS)}


def test_a_path_with_spaces_is_kept_whole_and_a_garbled_line_is_passed_over() -> None:
    maps = ("7f0000000000-7f0000001000 r--p 00000000 fd:01 5  /opt/my tools/lib x.so\n"
            "zz-7f0000001000 r--p 00000000 fd:01 5  /usr/lib/y.so\n")
    assert [m.path for m in file_mappings(maps)] == ["/opt/my tools/lib x.so"]


def test_present_pages_are_those_with_bit_63_counted_from_the_mapping_s_file_offset() -> None:
    mapping = Mapping(0x1000, 0x1000 + 4 * PAGE, 3 * PAGE, "/usr/lib/z.so")
    present = (1 << 63) | 0x1234  # a PFN beside the flag
    swapped = 1 << 62
    entries = b"".join(e.to_bytes(8, "little") for e in (present, 0, swapped, present))
    assert present_pages(mapping, entries) == [3, 6]


def test_runs_of_consecutive_pages() -> None:
    assert runs([7, 1, 2, 3, 9, 8, 3]) == [(1, 3), (7, 3)]
    assert runs([]) == []


def test_after_a_burst_the_processes_read_include_the_newest_libvirtds_not_only_qemus() -> None:
    qemus = list(range(200, 212))  # a burst of twelve launches: twelve guests' QEMUs...
    libvirtds = list(range(100, 112))  # ...and their libvirtds, all started before the QEMUs
    order = look_order(999, [qemus, libvirtds])
    read = order[:LOOK_AT]  # learn reads the first LOOK_AT it has not seen, and only marks the rest
    assert read[0] == 999  # the launch's own launcher first
    assert {211, 210, 209} <= set(read) and {111, 110, 109} <= set(read)
    assert sorted(order) == sorted([999, *qemus, *libvirtds])  # every one still passed: the rest are marked


def test_small_groups_and_a_missing_group_keep_every_pid_once() -> None:
    assert look_order(5, [[7], []]) == [5, 7]
    assert look_order(5, [[3, 9, 4, 8], [6, 2]]) == [5, 9, 8, 4, 6, 2, 3]


def _saved(*files: RememberedFile, page_size: int = PAGE) -> Remembered:
    return Remembered(page_size, list(files))


INODES = {"/usr/bin/qemu-system-x86_64": 1234, "/usr/lib/x86_64-linux-gnu/libc.so.6": 55,
          "/var/lib/virtbus/vmis/vm1/disk.img": 66}


def test_recall_plan_locks_again_what_is_still_the_same_file() -> None:
    saved = _saved(RememberedFile("/usr/bin/qemu-system-x86_64", 1234, [(0, 3), (10, 2)]),
                   RememberedFile("/usr/lib/x86_64-linux-gnu/libc.so.6", 54, [(0, 1)]),  # replaced since
                   RememberedFile("/usr/lib/gone.so", 7, [(0, 1)]))  # no longer there
    assert recall_plan(saved, INODES.get) == [("/usr/bin/qemu-system-x86_64", 1234, {0, 1, 2, 10, 11})]


def test_recall_plan_passes_over_what_a_launch_never_locks() -> None:
    saved = _saved(RememberedFile("/var/lib/virtbus/vmis/vm1/disk.img", 66, [(0, 4)]),  # the node's state
                   RememberedFile("/dev/kvm", 1, [(0, 1)]),
                   RememberedFile("usr/bin/qemu-system-x86_64", 1234, [(0, 1)]),  # not absolute
                   RememberedFile("/usr/bin/qemu-system-x86_64", 1234, [(-1, 2), (4, 0), (5, 1)]))
    inodes = {**INODES, "/dev/kvm": 1, "usr/bin/qemu-system-x86_64": 1234}
    assert recall_plan(saved, inodes.get, skip=(Path("/var/lib/virtbus"),)) == [
        ("/usr/bin/qemu-system-x86_64", 1234, {5})]


def test_recall_plan_keeps_within_the_bound_and_its_page_size() -> None:
    saved = _saved(RememberedFile("/usr/bin/qemu-system-x86_64", 1234, [(0, 10**9)]),
                   RememberedFile("/usr/lib/x86_64-linux-gnu/libc.so.6", 55, [(0, 3)]))
    plan = recall_plan(saved, INODES.get, bound=4 * PAGE)
    assert [(path, len(pages)) for path, _, pages in plan] == [("/usr/bin/qemu-system-x86_64", 4)]
    assert recall_plan(_saved(*saved.files, page_size=PAGE * 2), INODES.get) == []  # another machine's list
