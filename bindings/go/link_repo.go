//go:build !gomlx_pkgconfig

package gomlx

// Default linking: the header and the library built in this repository
// (cargo build --release --lib), found through an rpath so no
// LD_LIBRARY_PATH is needed. Build with -tags gomlx_pkgconfig to use an
// installed library described by gomlx.pc instead (see README.md).

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -lgomlx -Wl,-rpath,${SRCDIR}/../../target/release
*/
import "C"
