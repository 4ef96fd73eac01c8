//! The fast CPU port: threads, SIMD, gemm matmul and fused composites.
