package gomlx

// The C progress callback of gm_convert (its own file: a file with an
// //export may only declare, not define, C in its preamble).

/*
#include "gomlx.h"
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

//export gomlxConvertProgress
func gomlxConvertProgress(done, total C.size_t, userData unsafe.Pointer) C.int32_t {
	c := cgo.Handle(uintptr(userData)).Value().(*convertCall)
	if c.onProgress(int(done), int(total)) {
		return 1
	}
	return 0
}
