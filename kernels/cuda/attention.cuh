// Partial attention on the GPU with the CPU kernel's contract
// (kernels/attention.h): same args, same (o, lse) semantics, so GPU and CPU
// partials merge with LseMerge. Long KV lists are split across CTAs
// (flash-decoding): each CTA streams a share of one kv head's chunks for up to
// 8 queries of its GQA group and writes an (o, lse) partial to caller-owned
// workspace; a second kernel merges the partials by log-sum-exp.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/attention.h"

namespace headwise::kernels::cuda {

// nullptr when `args` suit the GPU kernel, else a static message. Checks
// everything the CPU PartialAttentionArgsError does except the blocks
// themselves, which live in device memory and are never read on the host.
const char* PartialAttentionDeviceArgsError(const PartialAttentionArgs& args);

// Workspace PartialAttention would use for `args` on the current device (its
// split count depends on the device's multiprocessor count): 0 when it would
// not split. Reads no device memory.
cudaError_t PartialAttentionWorkspaceBytes(const PartialAttentionArgs& args, size_t* bytes);

// Enqueues partial attention on `stream`. Every pointer in `args` is a device
// pointer: q, q_pos, o, lse, the `blocks` array itself (n_kv_heads * n_blocks
// KvBlockView entries in device memory, head-major) and each view's k and v.
// `args.parallel` is ignored. `workspace` (device, 16-byte aligned, may be
// null) of `workspace_bytes`: the split count shrinks to what fits, down to one
// (no workspace, no merge). The workspace, blocks and inputs must stay valid
// and unchanged until the work completes on the stream.
//
// Results match the CPU kernel up to float rounding: f32 accumulation, KV
// converted exactly on load, expf/logf. head_dim 64, 128 and 256 with 16-byte
// aligned K/V take the cp.async path; other head_dims and misaligned blocks a
// slower element-wise load path. A block whose n_tokens <= 0 is skipped
// without touching its pointers; a view with n_tokens > 0 and a bad pointer
// faults the kernel (reported at the next synchronisation).
//
// Returns cudaErrorInvalidValue (enqueuing nothing) when
// PartialAttentionDeviceArgsError reports a problem, else the launch status.
cudaError_t PartialAttention(const PartialAttentionArgs& args, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream);

}  // namespace headwise::kernels::cuda
