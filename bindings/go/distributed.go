package gomlx

/*
#include "gomlx.h"
*/
import "C"

// WithDistributed splits the model over the ranks of an MLX distributed group
// (tensor parallel; docs/distributed.md): "ring", "nccl", "mpi", "jaccl" or
// "any"; "off" = not split. Unset = the GOMLX_DISTRIBUTED environment
// variable, which `gomlx launch` sets for the processes it starts.
func WithDistributed(backend string) LoadOption {
	return func(c *loadConfig) { c.distributed = backend }
}

// WithMoESplit says how a split model's mixture-of-experts blocks are split:
// "columns" of every expert (compute and memory divide by the ranks) or whole
// "experts" per rank. Unset = GOMLX_MOE_SPLIT, else columns where they divide.
func WithMoESplit(how string) LoadOption {
	return func(c *loadConfig) { c.moeSplit = how }
}

// DistributedRank says which part this process plays when the options (or
// GOMLX_DISTRIBUTED) split the model: 0 leads (LoadModel, then serve every
// request), above 0 follows (call Follow), -1 = not split. Loads nothing.
func DistributedRank(opts ...LoadOption) (int, error) {
	var m cmem
	defer m.free()
	co, err := loadOptions(&m, opts)
	if err != nil {
		return 0, err
	}
	var rank C.int64_t
	if err := call("gm_distributed_rank", func() bool { return C.gm_distributed_rank(co, &rank) != C.GM_OK }); err != nil {
		return 0, err
	}
	return int(rank), nil
}

// Follow, on a rank above 0, loads this rank's part of the model at path (with
// the same options as rank 0) and runs the steps rank 0's model sends until
// rank 0 closes it; it returns the turns followed.
func Follow(path string, opts ...LoadOption) (uint64, error) {
	var m cmem
	defer m.free()
	cpath, err := m.str("path", path)
	if err != nil {
		return 0, err
	}
	co, err := loadOptions(&m, opts)
	if err != nil {
		return 0, err
	}
	var steps C.uint64_t
	if err := call("gm_follow", func() bool { return C.gm_follow(cpath, co, &steps) != C.GM_OK }); err != nil {
		return 0, err
	}
	return uint64(steps), nil
}
