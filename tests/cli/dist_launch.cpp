// dist_launch: a tiny torchrun stand-in for the CLI tests. Starts N copies of a command on
// 127.0.0.1 with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and a free MASTER_PORT set,
// waits for all of them (killing every rank once DEADLINE seconds have passed), prints
// each rank's output and checks exit statuses and output patterns.
//
//   dist_launch N DEADLINE [options] -- COMMAND ARGS...
//     --rc CODE            every rank must exit with CODE (default 0)
//     --rank-arg R ARG     append ARG to rank R's command line (repeatable)
//     --expect R REGEX     rank R's stdout+stderr must match REGEX (ECMAScript, '.' matches newlines)
//     --reject R REGEX     rank R's output must NOT match REGEX
//
// Prints "dist_launch OK" and exits 0 when every check passes, exits 1 otherwise.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "dist_launch: " << why
            << "\nusage: dist_launch N DEADLINE [--rc CODE] [--rank-arg R ARG]... [--expect R REGEX]... "
               "[--reject R REGEX]... -- COMMAND ARGS...\n";
  std::exit(2);
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) usage("socket() failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;  // the kernel picks a free port
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) usage("bind() failed");
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// '.' does not match '\n' in std::regex; match against a one-line copy instead.
std::string one_line(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

struct Pattern {
  int rank;
  std::string regex;
  bool expect;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) usage("too few arguments");
  const int n = std::atoi(argv[1]);
  const double deadline_s = std::atof(argv[2]);
  if (n < 1 || n > 64 || !(deadline_s > 0)) usage("bad N or DEADLINE");
  int want_rc = 0;
  std::vector<std::vector<std::string>> rank_args(static_cast<size_t>(n));
  std::vector<Pattern> patterns;
  std::vector<std::string> cmd;
  auto rank_of = [&](const char* s) {
    const int r = std::atoi(s);
    if (r < 0 || r >= n) usage(std::string("bad rank ") + s);
    return r;
  };
  int i = 3;
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "--rc" && i + 1 < argc) {
      want_rc = std::atoi(argv[++i]);
    } else if (a == "--rank-arg" && i + 2 < argc) {
      const int r = rank_of(argv[i + 1]);
      rank_args[static_cast<size_t>(r)].push_back(argv[i + 2]);
      i += 2;
    } else if ((a == "--expect" || a == "--reject") && i + 2 < argc) {
      patterns.push_back({rank_of(argv[i + 1]), argv[i + 2], a == "--expect"});
      i += 2;
    } else {
      usage("unknown option " + a);
    }
  }
  for (; i < argc; ++i) cmd.push_back(argv[i]);
  if (cmd.empty()) usage("no command after --");

  char tmpl[] = "/tmp/ddpm_dist_launch_XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) usage("mkdtemp failed");
  const std::string logdir = tmpl;
  const int port = free_port();
  std::cout << "dist_launch: " << n << " ranks, MASTER_ADDR=127.0.0.1 MASTER_PORT=" << port << "\n" << std::flush;

  std::vector<pid_t> pids(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    const std::string log = logdir + "/rank" + std::to_string(r) + ".log";
    const pid_t pid = ::fork();
    if (pid < 0) usage("fork failed");
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      if (std::freopen(log.c_str(), "w", stdout) == nullptr) std::_Exit(127);
      ::dup2(::fileno(stdout), ::fileno(stderr));
      std::vector<std::string> args = cmd;
      for (const auto& a : rank_args[static_cast<size_t>(r)]) args.push_back(a);
      std::vector<char*> cargv;
      for (auto& a : args) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      ::execv(cargv[0], cargv.data());
      std::perror("execv");
      std::_Exit(127);
    }
    pids[static_cast<size_t>(r)] = pid;
  }

  // Wait for every rank; past the deadline, kill the ones still running.
  std::vector<int> status(static_cast<size_t>(n), -1);  // exit code, or -1 while running
  std::vector<std::string> how(static_cast<size_t>(n));
  const auto t0 = std::chrono::steady_clock::now();
  int running = n;
  bool timed_out = false;
  while (running > 0) {
    for (int r = 0; r < n; ++r) {
      if (status[static_cast<size_t>(r)] != -1) continue;
      int st = 0;
      if (::waitpid(pids[static_cast<size_t>(r)], &st, WNOHANG) == pids[static_cast<size_t>(r)]) {
        if (WIFEXITED(st)) {
          status[static_cast<size_t>(r)] = WEXITSTATUS(st);
          how[static_cast<size_t>(r)] = "exit status " + std::to_string(WEXITSTATUS(st));
        } else {
          status[static_cast<size_t>(r)] = 128 + WTERMSIG(st);
          how[static_cast<size_t>(r)] = "killed by signal " + std::to_string(WTERMSIG(st));
        }
        --running;
      }
    }
    if (running == 0) break;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (elapsed > deadline_s) {
      timed_out = true;
      for (int r = 0; r < n; ++r) {
        if (status[static_cast<size_t>(r)] != -1) continue;
        ::kill(pids[static_cast<size_t>(r)], SIGKILL);
        ::waitpid(pids[static_cast<size_t>(r)], nullptr, 0);
        status[static_cast<size_t>(r)] = 137;
        how[static_cast<size_t>(r)] = "still running after " + std::to_string(deadline_s) + " s: killed";
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  bool ok = !timed_out;
  std::vector<std::string> logs(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    logs[static_cast<size_t>(r)] = read_all(logdir + "/rank" + std::to_string(r) + ".log");
    std::cout << "===== rank " << r << ": " << how[static_cast<size_t>(r)] << " =====\n"
              << logs[static_cast<size_t>(r)] << "\n";
    std::remove((logdir + "/rank" + std::to_string(r) + ".log").c_str());
    if (status[static_cast<size_t>(r)] != want_rc) {
      std::cout << "dist_launch: FAIL: rank " << r << " exited with " << status[static_cast<size_t>(r)]
                << ", expected " << want_rc << "\n";
      ok = false;
    }
  }
  ::rmdir(logdir.c_str());
  for (const auto& p : patterns) {
    const bool found =
        std::regex_search(one_line(logs[static_cast<size_t>(p.rank)]), std::regex(p.regex, std::regex::ECMAScript));
    if (found != p.expect) {
      std::cout << "dist_launch: FAIL: rank " << p.rank << "'s output " << (p.expect ? "does not match" : "matches")
                << " '" << p.regex << "'\n";
      ok = false;
    }
  }
  std::cout << "dist_launch: all ranks done in " << elapsed << " s" << (timed_out ? " (deadline passed)" : "")
            << "\n";
  if (!ok) return 1;
  std::cout << "dist_launch OK\n";
  return 0;
}
