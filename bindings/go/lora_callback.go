package gomlx

// The C progress callback of gm_lora_train. It lives in its own file because
// a file with an //export may only declare, not define, C in its preamble.

/*
#include "gomlx.h"
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

//export gomlxLoraProgress
func gomlxLoraProgress(p *C.gm_lora_progress, userData unsafe.Pointer) C.int32_t {
	c := cgo.Handle(uintptr(userData)).Value().(*loraCall)
	if c.onProgress(p) {
		return 1
	}
	return 0
}
