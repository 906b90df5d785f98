//go:build gomlx_pkgconfig

package gomlx

// Linking through pkg-config: scripts/gomlx-pc writes gomlx.pc (Cflags with
// the include directory, Libs with -lgomlx and an rpath); put its directory
// on PKG_CONFIG_PATH and build with -tags gomlx_pkgconfig.

/*
#cgo pkg-config: gomlx
*/
import "C"
