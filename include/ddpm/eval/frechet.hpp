#pragma once
/// Fréchet distance between two Gaussians N(μ1, Σ1), N(μ2, Σ2) (Dowson & Landau 1982; FID,
/// Heusel et al. 2017):
///
///   FD = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^{1/2}
///
/// pytorch-fid (fid_score.calculate_frechet_distance) computes the last term as
/// trace(real(scipy.linalg.sqrtm(Σ1·Σ2))), retrying with Σ + 1e-6·I when sqrtm returns
/// non-finite values and dropping an imaginary part if the diagonal's is below 1e-3.
/// Here the same quantity is computed without a non-symmetric matrix square root:
///
///   Σ1Σ2 = A⁻¹ (A Σ2 A) A for A = Σ1^{1/2} (when Σ1 is invertible; in general AB and BA share
///   their non-zero eigenvalues, with B = A Σ2), so Σ1Σ2 has the eigenvalues λ_i ≥ 0 of the
///   symmetric PSD matrix M = Σ1^{1/2} Σ2 Σ1^{1/2}; the principal square root of Σ1Σ2 has
///   eigenvalues √λ_i, so tr (Σ1Σ2)^{1/2} = Σ_i √λ_i.
///
/// Both square roots are symmetric eigendecompositions (torch::linalg_eigh) in float64. Round-off
/// can leave eigenvalues slightly below zero; their square roots are imaginary, exactly the
/// "small imaginary component" whose real part (0) pytorch-fid keeps, so they are clamped to 0
/// and the most negative one (relative to the largest) is reported. Where scipy's sqrtm is
/// accurate the two agree to ~1e-10 relative (tests/unit/test_eval_frechet.cpp checks recorded
/// scipy values); where Σ1Σ2 is singular (fewer samples than dimensions) sqrtm can fail and
/// pytorch-fid's eps·I retry shifts the result by O(eps·D), while this computation stays exact up
/// to the square roots of round-off-sized eigenvalues: ~1e-8 relative for rank-deficient Σ.
#include <torch/types.h>

#include <algorithm>
#include <cmath>

namespace ddpm {

/// The Fréchet distance and its parts.
struct FrechetResult {
  double distance = 0;    ///< FD = mean_term + trace_term
  double mean_term = 0;   ///< ‖μ1 − μ2‖²
  double trace_term = 0;  ///< tr Σ1 + tr Σ2 − 2 tr (Σ1Σ2)^{1/2}
  double trace_sqrt = 0;  ///< tr (Σ1Σ2)^{1/2}
  /// min(λ_i) / max(λ_i) when negative (round-off), else 0: how far the product was from PSD.
  double negative_eigenvalue_ratio = 0;
};

namespace detail {
/// Symmetric PSD square root via eigh, float64 [D, D] -> [D, D]; negative eigenvalues clamp to 0.
inline torch::Tensor psd_sqrt(const torch::Tensor& s) {
  auto [evals, evecs] = torch::linalg_eigh(s);
  return torch::matmul(evecs * evals.clamp_min(0).sqrt().unsqueeze(0), evecs.t());
}
}  // namespace detail

/// FD between N(mu1, sigma1) and N(mu2, sigma2): mu [D], sigma [D, D] (symmetric; any floating
/// dtype, computed in float64 on the CPU). See the header comment for the method.
inline FrechetResult frechet_distance(const torch::Tensor& mu1, const torch::Tensor& sigma1,
                                      const torch::Tensor& mu2, const torch::Tensor& sigma2) {
  TORCH_CHECK(mu1.defined() && mu2.defined() && sigma1.defined() && sigma2.defined(),
              "frechet_distance: undefined input");
  TORCH_CHECK(mu1.dim() == 1 && mu2.dim() == 1 && mu1.size(0) == mu2.size(0),
              "frechet_distance: means must be [D] of the same D, got ", mu1.sizes(), " and ", mu2.sizes());
  const int64_t d = mu1.size(0);
  TORCH_CHECK(sigma1.sizes() == torch::IntArrayRef({d, d}) && sigma2.sizes() == torch::IntArrayRef({d, d}),
              "frechet_distance: covariances must be [", d, ", ", d, "], got ", sigma1.sizes(), " and ",
              sigma2.sizes());
  auto f64 = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat64); };
  const torch::Tensor m1 = f64(mu1), m2 = f64(mu2);
  torch::Tensor s1 = f64(sigma1), s2 = f64(sigma2);
  TORCH_CHECK(torch::isfinite(m1).all().item<bool>() && torch::isfinite(m2).all().item<bool>() &&
                  torch::isfinite(s1).all().item<bool>() && torch::isfinite(s2).all().item<bool>(),
              "frechet_distance: non-finite mean or covariance");
  s1 = (s1 + s1.t()) * 0.5;
  s2 = (s2 + s2.t()) * 0.5;
  const torch::Tensor a = detail::psd_sqrt(s1);
  torch::Tensor m = torch::matmul(torch::matmul(a, s2), a);
  m = (m + m.t()) * 0.5;
  const torch::Tensor lambda = torch::linalg_eigvalsh(m);
  FrechetResult r;
  const double lmax = lambda.max().item<double>();
  const double lmin = lambda.min().item<double>();
  if (lmin < 0 && lmax > 0) r.negative_eigenvalue_ratio = lmin / lmax;
  r.trace_sqrt = lambda.clamp_min(0).sqrt().sum().item<double>();
  const torch::Tensor diff = m1 - m2;
  r.mean_term = diff.dot(diff).item<double>();
  r.trace_term = s1.trace().item<double>() + s2.trace().item<double>() - 2.0 * r.trace_sqrt;
  r.distance = r.mean_term + r.trace_term;
  return r;
}

}  // namespace ddpm
