// loader_bench: how fast the streaming BatchLoader decodes a folder dataset (docs/training.md,
// "Memory does not grow with the folder"), without a model in the way.
//
//   loader_bench DIR [--image-size S] [--batch-size B] [--threads T] [--batches N] [--prefetch P]
//
// Prints one JSON object: files, open_seconds (listing + header check), images, seconds,
// images_per_s. Errors exit 2.
#include <ddpm/data/folder.hpp>
#include <ddpm/data/loader.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: loader_bench DIR [--image-size S] [--batch-size B] [--threads T] [--batches N] [--prefetch P]\n");
    return 2;
  }
  const std::string dir = argv[1];
  int64_t size = 32, batch = 64, batches = 100;
  int threads = 4, prefetch = 2;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long long v = std::atoll(argv[i + 1]);
    if (flag == "--image-size") size = v;
    else if (flag == "--batch-size") batch = v;
    else if (flag == "--threads") threads = static_cast<int>(v);
    else if (flag == "--batches") batches = v;
    else if (flag == "--prefetch") prefetch = static_cast<int>(v);
    else {
      std::fprintf(stderr, "loader_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  try {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    ddpm::DatasetOptions o;
    o.image_size = size;
    const ddpm::ImageData d = ddpm::load_image_folder(dir, true, o);
    const double open_s = std::chrono::duration<double>(clock::now() - t0).count();
    ddpm::BatchLoaderOptions lo;
    lo.batch_size = batch;
    lo.threads = threads;
    lo.prefetch = prefetch;
    ddpm::BatchLoader loader(d.stream, lo, d.labels);
    const auto t1 = clock::now();
    loader.start(0);
    double checksum = 0;
    for (int64_t s = 0; s < batches; ++s) checksum += loader.next().images[0][0][0][0].item<double>();
    const double secs = std::chrono::duration<double>(clock::now() - t1).count();
    std::printf("{\"files\": %lld, \"open_seconds\": %.3f, \"threads\": %d, \"images\": %lld, \"seconds\": %.3f, "
                "\"images_per_s\": %.1f, \"checksum\": %.4f}\n",
                static_cast<long long>(d.size()), open_s, threads, static_cast<long long>(batches * batch), secs,
                batches * batch / secs, checksum);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loader_bench: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
