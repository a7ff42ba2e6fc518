// A kernel timeline for recorded (graph) steps, where Nsight Compute cannot
// look (it serializes kernels) and Nsight Systems is not installed: a CUDA
// injection library (CUDA_INJECTION64_PATH=libr1_kernel_trace.so) that turns on
// CUPTI's concurrent-kernel activity records and writes one CSV row per kernel
// to $R1_TRACE_CSV: start and end (ns, GPU clock), the graph and graph node it
// came from, the correlation id (the cudaGraphLaunch of a replay), the grid and
// the demangled name. tools/trace_summary.py turns it into the critical-path
// share of every kernel of a step (programmatic dependent launch overlaps
// neighbours, so a kernel's own duration says little about what it costs).
#include <cupti.h>
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace {

constexpr size_t kBufferBytes = 4u << 20;
std::mutex g_mutex;
FILE* g_out = nullptr;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

std::string demangle(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string s = status == 0 && d != nullptr ? d : name;
  std::free(d);
  for (char& c : s)
    if (c == ',') c = ';';  // one CSV column
  return s;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(g_mutex);
  CUpti_Activity* record = nullptr;
  while (g_out != nullptr && cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    std::fprintf(g_out, "%llu,%llu,%u,%llu,%u,%u,%d,%d,%d,%s\n",
                 static_cast<unsigned long long>(k->start), static_cast<unsigned long long>(k->end),
                 k->graphId, static_cast<unsigned long long>(k->graphNodeId), k->correlationId,
                 k->streamId, k->gridX, k->gridY, k->gridZ, demangle(k->name).c_str());
  }
  std::free(buffer);
}

void flush_at_exit() {
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_out != nullptr) std::fclose(g_out);
  g_out = nullptr;
}

}  // namespace

// Called by the CUDA driver when it initializes (CUDA_INJECTION64_PATH).
extern "C" __attribute__((visibility("default"))) int InitializeInjection() {
  const char* path = std::getenv("R1_TRACE_CSV");
  g_out = std::fopen(path != nullptr ? path : "kernel_trace.csv", "w");
  if (g_out == nullptr) return 0;
  std::fprintf(g_out, "start,end,graph,node,correlation,stream,gx,gy,gz,name\n");
  if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
    std::fprintf(stderr, "kernel_trace: CUPTI activity tracing unavailable\n");
    return 0;
  }
  std::atexit(flush_at_exit);
  return 1;
}
