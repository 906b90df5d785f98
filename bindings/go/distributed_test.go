package gomlx

import (
	"strings"
	"testing"
)

// The rank a process plays comes from the launcher's MLX_RANK once the model is to be
// split; the split itself (ranks on loopback) is tested through the C ABI in tests/distributed.rs.
func TestDistributedRank(t *testing.T) {
	t.Setenv("GOMLX_DISTRIBUTED", "")
	t.Setenv("MLX_RANK", "2")
	if r, err := DistributedRank(WithDistributed("ring")); err != nil || r != 2 {
		t.Fatalf("ring under MLX_RANK=2: rank %d, %v", r, err)
	}
	for _, opts := range [][]LoadOption{{WithDistributed("off")}, nil} {
		if r, err := DistributedRank(opts...); err != nil || r != -1 {
			t.Fatalf("not split: rank %d, %v", r, err)
		}
	}
	if _, err := DistributedRank(WithDistributed("tcp")); err == nil || !strings.Contains(err.Error(), "gm_load_options.distributed is 'tcp'") {
		t.Fatalf("bad backend: %v", err)
	}
	if r, err := DistributedRank(WithDistributed("ring"), WithMoESplit("experts")); err != nil || r != 2 {
		t.Fatalf("with a MoE split: rank %d, %v", r, err)
	}
	if _, err := DistributedRank(WithDistributed("ring"), WithMoESplit("rows")); err == nil || !strings.Contains(err.Error(), "gm_load_options.moe_split is 'rows' (expected columns or experts)") {
		t.Fatalf("bad MoE split: %v", err)
	}
	t.Setenv("MLX_RANK", "0")
	if _, err := Follow(chatModelPath, WithDistributed("ring")); err == nil || !strings.Contains(err.Error(), "not a follower rank") {
		t.Fatalf("rank 0 cannot follow: %v", err)
	}
}
