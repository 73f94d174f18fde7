use glassbox_kernels::*;
use std::time::Instant;
fn main() {
    for &m in &[80usize, 160, 320] {
        for &(n, k) in &[(960usize, 576usize), (576, 576), (3072, 576), (576, 1536)] {
            let a: Vec<f32> = (0..m * k.max(n)).map(|i| (i % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
            let p = PackedMatrix::from_rows(&w, n, k, k);
            let mut c = vec![0f32; m * n];
            let mut dx = vec![0f32; m * k];
            let reps = 20;
            let t = Instant::now();
            for _ in 0..reps {
                gemm_packed(&a, k, m, &p, &mut c, n, true);
            }
            let f = t.elapsed().as_secs_f64() / reps as f64;
            let t = Instant::now();
            for _ in 0..reps {
                gemm_packed_backward(&a, n, m, &p, &mut dx, k, true);
            }
            let b = t.elapsed().as_secs_f64() / reps as f64;
            let fl = 2.0 * (m * n * k) as f64;
            println!(
                "m={m} n={n} k={k}: fwd {:.1} GF/s, bwd {:.1} GF/s",
                fl / f / 1e9,
                fl / b / 1e9
            );
        }
    }
}
