#pragma once
/// SIGINT/SIGTERM during training: a handler that only records the signal, so the loop can
/// stop at a step boundary with a checkpoint.
#include <atomic>
#include <csignal>

namespace ddpm::detail {

/// The last SIGINT/SIGTERM received while a SignalGuard was alive (0 = none).
inline std::atomic<int>& pending_signal() {
  static std::atomic<int> sig{0};
  return sig;
}
extern "C" inline void ddpm_trainer_signal_handler(int sig) { pending_signal().store(sig); }

/// Installs SIGINT/SIGTERM handlers that only set pending_signal(); restores the previous
/// ones on destruction.
class SignalGuard {
 public:
  SignalGuard() {
    pending_signal().store(0);
    struct sigaction sa {};
    sa.sa_handler = &ddpm_trainer_signal_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

}  // namespace ddpm::detail
