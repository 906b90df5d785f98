module gomlx.dev/gomlx

go 1.26
