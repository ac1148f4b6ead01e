"""The few libbpf calls the agent's BPF programs need (the XDP fast path, the tun offload),
through ctypes on libbpf.so.1 (Debian: libbpf1).

No BCC and no compiler: the BPF objects are built ahead of time (agent/bpf). Every call that can
fail raises ``XdpError`` naming the call, the object or interface, and the kernel's reason; a
failed load carries the tail of libbpf's log, which holds the verifier's (``object.BpfObject``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading

BPF_XDP = 37  # enum bpf_attach_type
BPF_TCX_INGRESS = 46  # enum bpf_attach_type, Linux 6.6+ (tcx: TC programs attached by BPF links)
BPF_TCX_EGRESS = 47
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
LIBBPF_SONAME = "libbpf.so.1"
_LOG_LINES_KEPT = 200


class XdpError(OSError):
    """A BPF object (the XDP fast path's, or the tun offload's: its OffloadError is one) could not
    be set up or used; the message says which call and why, and ``code`` is the errno (0 when
    none applies)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (libbpf bpf.h)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class LinkCreateOpts(ctypes.Structure):
    """struct bpf_link_create_opts (libbpf 1.1 bpf.h); only ``flags`` is used."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
        ("iter_info", ctypes.c_void_p),
        ("iter_info_len", ctypes.c_uint32),
        ("target_btf_id", ctypes.c_uint32),
        ("union", ctypes.c_uint64 * 4),
    ]


class TcHook(ctypes.Structure):
    """struct bpf_tc_hook (libbpf 1.1 libbpf.h): a clsact qdisc's ingress or egress."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),  # BPF_TC_INGRESS, BPF_TC_EGRESS
        ("parent", ctypes.c_uint32),
    ]


class TcOpts(ctypes.Structure):
    """struct bpf_tc_opts (libbpf 1.1 libbpf.h): a cls_bpf filter (direct action)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


BPF_TC_INGRESS = 1 << 0
BPF_TC_EGRESS = 1 << 1
BPF_TC_F_REPLACE = 1 << 0

_PrintFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class LibBpf:
    """libbpf.so.1 with typed signatures, and libbpf's log kept for error messages."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL(LIBBPF_SONAME, use_errno=True)
        except OSError as exc:
            raise XdpError(f"{LIBBPF_SONAME} not found ({exc}); install the libbpf1 package") from exc
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._log: list[str] = []
        self._log_lock = threading.Lock()
        self._declare()
        # Kept referenced: libbpf calls it for as long as the library is loaded.
        self._printer = _PrintFn(self._print)
        self.lib.libbpf_set_print(self._printer)

    def _declare(self) -> None:
        lib, c = self.lib, ctypes
        signatures: dict[str, tuple[list[type], type | None]] = {
            "bpf_object__open_file": ([c.c_char_p, c.c_void_p], c.c_void_p),
            "bpf_object__load": ([c.c_void_p], c.c_int),
            "bpf_object__close": ([c.c_void_p], None),
            "bpf_object__find_program_by_name": ([c.c_void_p, c.c_char_p], c.c_void_p),
            "bpf_object__find_map_by_name": ([c.c_void_p, c.c_char_p], c.c_void_p),
            "bpf_program__fd": ([c.c_void_p], c.c_int),
            "bpf_map__fd": ([c.c_void_p], c.c_int),
            "bpf_map__set_max_entries": ([c.c_void_p, c.c_uint32], c.c_int),
            "bpf_map__max_entries": ([c.c_void_p], c.c_uint32),
            "bpf_map_update_elem": ([c.c_int, c.c_void_p, c.c_void_p, c.c_uint64], c.c_int),
            "bpf_map_lookup_elem": ([c.c_int, c.c_void_p, c.c_void_p], c.c_int),
            "bpf_map_delete_elem": ([c.c_int, c.c_void_p], c.c_int),
            "bpf_map_get_next_key": ([c.c_int, c.c_void_p, c.c_void_p], c.c_int),
            "bpf_link_create": ([c.c_int, c.c_int, c.c_int, c.POINTER(LinkCreateOpts)], c.c_int),
            "bpf_prog_query": (
                [c.c_int, c.c_int, c.c_uint32, *[c.POINTER(c.c_uint32)] * 3],
                c.c_int,
            ),
            "bpf_obj_get_info_by_fd": ([c.c_int, c.c_void_p, c.POINTER(c.c_uint32)], c.c_int),
            "bpf_xdp_query_id": ([c.c_int, c.c_int, c.POINTER(c.c_uint32)], c.c_int),
            "bpf_tc_hook_create": ([c.POINTER(TcHook)], c.c_int),
            "bpf_tc_attach": ([c.POINTER(TcHook), c.POINTER(TcOpts)], c.c_int),
            "bpf_tc_detach": ([c.POINTER(TcHook), c.POINTER(TcOpts)], c.c_int),
            "bpf_tc_query": ([c.POINTER(TcHook), c.POINTER(TcOpts)], c.c_int),
            "bpf_prog_test_run_opts": ([c.c_int, c.POINTER(TestRunOpts)], c.c_int),
            "libbpf_num_possible_cpus": ([], c.c_int),
            "libbpf_set_print": ([_PrintFn], c.c_void_p),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = restype
        self._libc.vsnprintf.argtypes = [c.c_char_p, c.c_size_t, c.c_char_p, c.c_void_p]
        self._libc.vsnprintf.restype = c.c_int

    def _print(self, level: int, fmt: bytes | None, args: int | None) -> int:
        # va_list reaches us as a pointer on x86-64 and arm64 alike; libc formats it.
        buffer = ctypes.create_string_buffer(4096)
        self._libc.vsnprintf(buffer, len(buffer), fmt, args)
        with self._log_lock:
            self._log.extend(buffer.value.decode(errors="replace").splitlines())
            del self._log[:-_LOG_LINES_KEPT]
        return 0

    def take_log(self) -> str:
        with self._log_lock:
            text = "\n".join(self._log)
            self._log.clear()
        return text

    def check(self, result: int, what: str) -> int:
        """libbpf 1.x returns -errno on failure."""
        if result < 0:
            code = -result
            raise XdpError(f"{what}: {errno.errorcode.get(code, code)} ({os.strerror(code)})", code)
        return result

    def possible_cpus(self) -> int:
        return self.check(self.lib.libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


_instance: LibBpf | None = None
_instance_lock = threading.Lock()


def libbpf() -> LibBpf:
    """The process's one binding (libbpf's print callback is process-wide)."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = LibBpf()
        return _instance
