"""One prebuilt BPF object file, loaded with libbpf: what the XDP fast path (``xdp.loader``) and
the tun offload (``kernel.offload``) both do with theirs. Open it, size its maps, load it (a
failure carries the tail of libbpf's log, which holds the verifier's), find its programs and
maps, run a program once on a frame (BPF_PROG_TEST_RUN), close it. Attaching is the user's.

Every failure raises the user's error class (``XdpError`` or a subclass), naming the call and
the kernel's reason, with its errno in ``code``.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Mapping
from pathlib import Path

from gwlb_agent.bpf.libbpf import LibBpf, TestRunOpts, XdpError, libbpf

TEST_RUN_HEADROOM = 512  # output room beyond the input: the programs never grow a frame


class BpfObject:
    """An opened and loaded object: its programs' and maps' fds stay valid until ``close``."""

    def __init__(
        self, path: Path, max_entries: Mapping[str, int] | None = None, error: type[XdpError] = XdpError
    ) -> None:
        """Open ``path``, set the named maps' max entries, load it into the kernel; ``error``
        (with everything undone) when a step fails."""
        self.bpf: LibBpf = libbpf()
        self.error = error
        self.path = path
        lib = self.bpf.lib
        if not path.is_file():
            raise error(f"BPF object {path} not found; build it with `make -C agent/bpf`")
        self.bpf.take_log()
        obj = lib.bpf_object__open_file(str(path).encode(), None)
        if not obj:
            self._fail(-(ctypes.get_errno() or errno.EINVAL), f"bpf_object__open_file({path})")
        self._obj: int | None = obj
        try:
            for name, entries in (max_entries or {}).items():
                bpf_map = self._find_map(name)
                self.check(lib.bpf_map__set_max_entries(bpf_map, entries), "bpf_map__set_max_entries")
            result = lib.bpf_object__load(obj)
            if result < 0:
                self._fail(result, f"bpf_object__load({path})")
        except BaseException:
            self.close()
            raise

    def check(self, result: int, what: str) -> int:
        """libbpf's -errno as ``error``; the result otherwise."""
        try:
            return self.bpf.check(result, what)
        except XdpError as exc:
            if isinstance(exc, self.error):
                raise
            raise self.error(str(exc), exc.code) from None

    def _fail(self, result: int, what: str) -> None:
        log = self.bpf.take_log()
        try:
            self.check(result, what)
        except XdpError as exc:
            message = f"{exc}\nlibbpf log (last lines):\n{log}" if log else str(exc)
            raise self.error(message, exc.code) from None

    def _find_map(self, name: str) -> int:
        bpf_map: int | None = self.bpf.lib.bpf_object__find_map_by_name(self._obj, name.encode())
        if not bpf_map:
            raise self.error(f"BPF object has no map {name}")
        return bpf_map

    def program_fd(self, name: str) -> int:
        program = self.bpf.lib.bpf_object__find_program_by_name(self._obj, name.encode())
        if not program:
            raise self.error(f"{self.path} has no program {name}")
        return self.check(self.bpf.lib.bpf_program__fd(program), f"bpf_program__fd({name})")

    def map_fd(self, name: str) -> int:
        return self.check(self.bpf.lib.bpf_map__fd(self._find_map(name)), f"bpf_map__fd({name})")

    def max_entries(self, name: str) -> int:
        return int(self.bpf.lib.bpf_map__max_entries(self._find_map(name)))

    def test_run(self, program: str, frame: bytes) -> tuple[int, bytes]:
        """Run a program once on ``frame`` (an Ethernet frame) in the kernel, without a NIC: its
        return value (unsigned, as the kernel reports it) and the frame after it."""
        program_fd = self.program_fd(program)
        data_in = ctypes.create_string_buffer(frame, len(frame))
        data_out = ctypes.create_string_buffer(len(frame) + TEST_RUN_HEADROOM)
        opts = TestRunOpts(
            sz=ctypes.sizeof(TestRunOpts),
            data_in=ctypes.addressof(data_in),
            data_out=ctypes.addressof(data_out),
            data_size_in=len(frame),
            data_size_out=len(data_out),
            repeat=1,
        )
        self.check(
            self.bpf.lib.bpf_prog_test_run_opts(program_fd, ctypes.byref(opts)),
            f"bpf_prog_test_run_opts({program}, {len(frame)}-byte frame)",
        )
        return int(opts.retval), data_out.raw[: opts.data_size_out]

    def close(self) -> None:
        """Free the object: its maps and programs go with their last fd (an attachment holds one)."""
        obj, self._obj = self._obj, None
        if obj:
            self.bpf.lib.bpf_object__close(obj)
