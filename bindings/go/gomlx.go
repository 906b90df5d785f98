// Package gomlx runs LLMs with the gomlx engine (Rust on Apple's MLX) through
// its C ABI (include/gomlx.h).
//
// Load a model with LoadModel, then Generate, Chat, Classify or
// BatchGenerate on it. A *Model is safe for concurrent use by any number of
// goroutines: every request is served by the model's own engine thread, and
// concurrent generations advance step by step in turn. Close releases the
// weights; a cleanup closes a model that becomes unreachable, but only as a
// safety net — call Close.
//
// Generation streams: Generate and Chat return a *Stream. Range over
// Stream.Tokens() to receive tokens as they are made; afterwards Err tells a
// normal end (nil) from an error, FinishReason why it ended and Metrics how
// it went. Cancelling the context passed to Generate stops the engine within
// one step (Err then returns the context's error); breaking out of the loop
// stops it too.
//
// Fine-tuning: TrainLoRA trains LoRA adapters from JSONL data and saves them
// in mlx-lm's layout; LoadModel(path, WithAdapter(dir)) applies them.
package gomlx

/*
#include <stdlib.h>
#include "gomlx.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"unsafe"
)

// Error is an error reported by the engine, with the operation that failed.
type Error struct {
	Op  string // the C function, e.g. "gm_model_load"
	Msg string // the engine's message
}

func (e *Error) Error() string { return "gomlx: " + e.Op + ": " + e.Msg }

// ErrClosed is returned by calls on a closed Model or Session.
var ErrClosed = errors.New("gomlx: closed")

// call runs f, which makes one C call, on a locked OS thread so that the
// thread-local gm_last_error read afterwards belongs to that call. f returns
// whether the call failed.
func call(op string, f func() bool) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if !f() {
		return nil
	}
	msg := "unknown error"
	if e := C.gm_last_error(); e != nil {
		msg = C.GoString(e)
	}
	return &Error{Op: op, Msg: msg}
}

// cmem holds C allocations made for one call and frees them together.
type cmem struct{ ptrs []unsafe.Pointer }

func (m *cmem) alloc(n int) unsafe.Pointer {
	if n == 0 {
		n = 1
	}
	p := C.calloc(C.size_t(n), 1)
	if p == nil {
		panic("gomlx: out of C memory")
	}
	m.ptrs = append(m.ptrs, p)
	return p
}

// str copies s into C memory; strings with a NUL byte cannot cross the C ABI.
func (m *cmem) str(what, s string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, fmt.Errorf("gomlx: %s contains a NUL byte", what)
	}
	p := C.CString(s)
	m.ptrs = append(m.ptrs, unsafe.Pointer(p))
	return p, nil
}

func (m *cmem) strs(what string, ss []string) (**C.char, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	arr := unsafe.Slice((**C.char)(m.alloc(len(ss)*int(unsafe.Sizeof((*C.char)(nil))))), len(ss))
	for i, s := range ss {
		p, err := m.str(fmt.Sprintf("%s[%d]", what, i), s)
		if err != nil {
			return nil, err
		}
		arr[i] = p
	}
	return &arr[0], nil
}

// ids copies token-id prompts into C memory: pointers and lengths.
func (m *cmem) ids(prompts [][]uint32) (**C.uint32_t, *C.size_t) {
	if len(prompts) == 0 {
		return nil, nil
	}
	ptrs := unsafe.Slice((**C.uint32_t)(m.alloc(len(prompts)*int(unsafe.Sizeof((*C.uint32_t)(nil))))), len(prompts))
	lens := unsafe.Slice((*C.size_t)(m.alloc(len(prompts)*int(unsafe.Sizeof(C.size_t(0))))), len(prompts))
	for i, p := range prompts {
		buf := unsafe.Slice((*C.uint32_t)(m.alloc(len(p)*4)), len(p))
		for j, v := range p {
			buf[j] = C.uint32_t(v)
		}
		if len(p) > 0 {
			ptrs[i] = &buf[0]
		}
		lens[i] = C.size_t(len(p))
	}
	return &ptrs[0], &lens[0]
}

func (m *cmem) free() {
	for _, p := range m.ptrs {
		C.free(p)
	}
	m.ptrs = nil
}

// Version is the library's version, e.g. "0.1.0".
func Version() string { return C.GoString(C.gm_version()) }

// ABIVersion is the C ABI version of the loaded library; it must equal
// HeaderABIVersion, the one these bindings were compiled against.
func ABIVersion() uint32 { return uint32(C.gm_abi_version()) }

// HeaderABIVersion is GM_ABI_VERSION of the header these bindings use.
const HeaderABIVersion = uint32(C.GM_ABI_VERSION)

// DeviceAvailable reports whether MLX can run on "cpu" or "gpu".
func DeviceAvailable(name string) (bool, error) {
	var m cmem
	defer m.free()
	cs, err := m.str("name", name)
	if err != nil {
		return false, err
	}
	var avail C.int32_t
	err = call("gm_device_available", func() bool { return C.gm_device_available(cs, &avail) != C.GM_OK })
	return avail == 1, err
}

// MemoryActive is the bytes held by live MLX arrays in this process.
func MemoryActive() uint64 { return uint64(C.gm_memory_active()) }

// MemoryPeak is the highest MemoryActive since start or ResetPeakMemory.
func MemoryPeak() uint64 { return uint64(C.gm_memory_peak()) }

// ResetPeakMemory restarts peak tracking from the current active memory.
func ResetPeakMemory() { C.gm_memory_reset_peak() }

// MemoryCache is the bytes kept in MLX's buffer cache for reuse.
func MemoryCache() uint64 { return uint64(C.gm_memory_cache()) }

// SetMemoryLimit sets MLX's process-wide memory limit; returns the previous one.
func SetMemoryLimit(bytes uint64) uint64 { return uint64(C.gm_set_memory_limit(C.size_t(bytes))) }

// SetCacheLimit sets MLX's process-wide buffer-cache limit (0 disables the
// cache); returns the previous one.
func SetCacheLimit(bytes uint64) uint64 { return uint64(C.gm_set_cache_limit(C.size_t(bytes))) }

// ClearCache returns MLX's cached buffers to the system.
func ClearCache() { C.gm_clear_cache() }

// DiscoveredModel is a model found by Discover.
type DiscoveredModel struct {
	Path           string // a model directory or a .gguf file
	Architecture   string
	QuantBits      int // 0 when not quantised (or GGUF)
	QuantGroupSize int
	Format         string // "safetensors" or "gguf"
	Supported      bool   // whether gomlx loads the architecture
	SizeBytes      uint64 // bytes of the weight files
}

// Discover finds models at or below dir, sorted by path: directories
// (config.json of a supported architecture plus safetensors weights) and
// .gguf files, as `gomlx discover` lists them.
func Discover(dir string) ([]DiscoveredModel, error) {
	var m cmem
	defer m.free()
	cdir, err := m.str("dir", dir)
	if err != nil {
		return nil, err
	}
	var r C.gm_discover_result
	r.struct_size = C.size_t(unsafe.Sizeof(r))
	if err := call("gm_discover", func() bool { return C.gm_discover(cdir, &r) != C.GM_OK }); err != nil {
		return nil, err
	}
	defer C.gm_discover_result_free(&r)
	n := int(r.n)
	out := make([]DiscoveredModel, n)
	if n == 0 {
		return out, nil
	}
	paths := unsafe.Slice(r.paths, n)
	archs := unsafe.Slice(r.architectures, n)
	bits := unsafe.Slice(r.quant_bits, n)
	groups := unsafe.Slice(r.quant_group_sizes, n)
	formats := unsafe.Slice(r.formats, n)
	supported := unsafe.Slice(r.supported, n)
	sizes := unsafe.Slice(r.size_bytes, n)
	for i := range out {
		out[i] = DiscoveredModel{C.GoString(paths[i]), C.GoString(archs[i]), int(bits[i]), int(groups[i]), C.GoString(formats[i]), bool(supported[i]), uint64(sizes[i])}
	}
	return out, nil
}

func nan() float64 { return math.NaN() }
