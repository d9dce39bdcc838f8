// Dequantization of GGUF tensor rows to bf16 on the GPU, for weights that feed
// the bf16 GEMMs. Each element is the CPU DequantizeRow (kernels/quant.h) f32
// value rounded to bf16 (nearest even): the f32 arithmetic is the same,
// operation for operation and without FMA contraction, so results are
// bit-identical to F32ToBf16(DequantizeRow(...)).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/quant.h"

namespace headwise::kernels::cuda {

// True for the types DequantizeRowsToBf16 handles: f32, f16, bf16, q4_0, q4_1,
// q5_0, q5_1, q8_0, q4_K, q5_K, q6_K.
bool CanDequantizeToBf16(GgmlType type);

// Dequantizes `rows` dense rows of n elements: row r is read at
// src + r * RowBytes(type, n) and written to dst + r * n (bf16 bits). Device
// pointers; src needs the alignment of its element type for f32/f16/bf16
// (quantized blocks are read byte-wise), dst 16 bytes for quantized types.
// Enqueued on `stream`. cudaErrorNotSupported for other types,
// cudaErrorInvalidValue when n is not a positive multiple of the block size
// or rows < 0; else the launch status.
cudaError_t DequantizeRowsToBf16(GgmlType type, const void* src, uint16_t* dst, int64_t rows,
                                 int64_t n, cudaStream_t stream);

}  // namespace headwise::kernels::cuda
