#include "processor/src/dedup_cache.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <new>
#include <string>

#include "processor/src/crc32c.h"
#include "processor/src/durable_file.h"

namespace tally::processor {

namespace {

constexpr char kMagic[8] = {'T', 'D', 'E', 'D', 'U', 'P', '0', '1'};

bool empty(const DedupKey& k) {
  return k.hi == 0 && k.lo == 0;
}

// Snapshot fields are little-endian: these hosts only (x86-64, arm64).
template <typename T>
T get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

DedupKey dedup_key(std::string_view video_id, std::string_view event_id) {
  // The same bytes as always (video, NUL, event id), hashed from the stack: ids are at most 64 and
  // 128 characters, and a heap string per event was a malloc and free on the consumer's hot path.
  std::array<char, 256> stack;
  std::string heap;
  const size_t n = video_id.size() + 1 + event_id.size();
  char* buf = stack.data();
  if (n > stack.size()) {
    heap.resize(n);
    buf = heap.data();
  }
  std::memcpy(buf, video_id.data(), video_id.size());
  buf[video_id.size()] = '\0';
  std::memcpy(buf + video_id.size() + 1, event_id.data(), event_id.size());
  XXH128_hash_t h = XXH3_128bits(buf, n);
  return DedupKey{h.high64, h.low64 | 1};
}

size_t DedupCache::capacity_for(int64_t memory_bytes) {
  return static_cast<size_t>(static_cast<double>(memory_bytes) / kBytesPerEntry);
}

DedupCache::DedupCache(int64_t window_ms, size_t capacity)
    : window_ms_(window_ms), capacity_(std::max<size_t>(capacity, 1)), effective_ms_(window_ms) {
  size_t slots = std::bit_ceil(static_cast<size_t>(static_cast<double>(capacity_) / 0.7) + 1);
  mask_ = slots - 1;
  slot_count_ = slots;
  slots_.reset(static_cast<Slot*>(std::calloc(slots, sizeof(Slot))));
  ring_.reset(static_cast<Aged*>(std::calloc(capacity_, sizeof(Aged))));
  if (!slots_ || !ring_) throw std::bad_alloc();
}

size_t DedupCache::memory_bytes() const {
  return slot_count_ * sizeof(Slot) + capacity_ * sizeof(Aged);
}

size_t DedupCache::find(const DedupKey& k) const {
  size_t i = home(k);
  while (!empty(slots_[i].key) && !(slots_[i].key == k)) i = (i + 1) & mask_;
  return i;
}

void DedupCache::erase(const DedupKey& k) {
  size_t i = find(k);
  if (empty(slots_[i].key)) return;
  // Backward-shift deletion keeps every probe chain unbroken without tombstones.
  size_t j = i;
  while (true) {
    j = (j + 1) & mask_;
    if (empty(slots_[j].key)) break;
    size_t h = home(slots_[j].key);
    bool movable = (j > i) ? (h <= i || h > j) : (h <= i && h > j);
    if (movable) {
      slots_[i] = slots_[j];
      i = j;
    }
  }
  slots_[i] = Slot{DedupKey{}, 0};
}

void DedupCache::evict_oldest() {
  erase(ring_[head_].key);
  head_ = (head_ + 1) % capacity_;
  size_.fetch_sub(1, std::memory_order_relaxed);
}

void DedupCache::insert(const DedupKey& k, int64_t position, int64_t now_ms) {
  if (size() == capacity_) {
    evict_oldest();
    evicted_early_.fetch_add(1, std::memory_order_relaxed);
  }
  size_t i = find(k);
  slots_[i] = Slot{k, position};
  ring_[(head_ + size()) % capacity_] = Aged{k, now_ms};
  size_.fetch_add(1, std::memory_order_relaxed);
  if (size() == capacity_) {
    effective_ms_.store(std::min(window_ms_, now_ms - ring_[head_].ts_ms),
                        std::memory_order_relaxed);
  } else {
    effective_ms_.store(window_ms_, std::memory_order_relaxed);
  }
}

bool DedupCache::check(const DedupKey& key, int64_t position, int64_t now_ms) {
  while (size() > 0 && ring_[head_].ts_ms < now_ms - window_ms_) evict_oldest();
  size_t i = find(key);
  if (!empty(slots_[i].key)) {
    // Seen at an earlier position: a duplicate. At this position or later: this is a replay of the
    // first occurrence (or of one that came after an eviction), which counts.
    return slots_[i].first_position < position;
  }
  insert(key, position, now_ms);
  return false;
}

std::string DedupCache::encode(int64_t covered_offset) const {
  constexpr size_t kHeader = sizeof(kMagic) + 8 + 8 + 8;
  constexpr size_t kEntry = 32;
  constexpr size_t kAhead = 16;
  const size_t count = size();
  std::string out;
  out.resize(kHeader + count * kEntry + 4);
  char* p = out.data();
  std::memcpy(p, kMagic, sizeof(kMagic));
  p += sizeof(kMagic);
  auto put_at = [&p](auto v) {
    std::memcpy(p, &v, sizeof(v));  // little-endian, as get()
    p += sizeof(v);
  };
  put_at(covered_offset);
  put_at(window_ms_);
  put_at(static_cast<uint64_t>(count));
  // The ring in insertion order, as (at most) two contiguous runs. Each entry's position is a
  // random probe into the table: the probe kAhead entries on is started before this one is read.
  // This loop is the consumer's whole pause for a snapshot, so it avoids a division per entry.
  const size_t first_run = std::min(count, capacity_ - head_);
  auto aged = [&](size_t n) -> const Aged& {
    return n < first_run ? ring_[head_ + n] : ring_[n - first_run];
  };
  for (size_t n = 0; n < count; ++n) {
    if (n + kAhead < count) prefetch(aged(n + kAhead).key);
    const Aged& a = aged(n);
    put_at(a.key.hi);
    put_at(a.key.lo);
    put_at(slots_[find(a.key)].first_position);
    put_at(a.ts_ms);
  }
  const uint32_t crc = crc32c(out.data(), static_cast<size_t>(p - out.data()));
  put_at(crc);
  return out;
}

Status DedupCache::save(const std::filesystem::path& file, int64_t covered_offset) const {
  return write_file_durably(file, encode(covered_offset));
}

Result<int64_t> DedupCache::load(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return make_error(ErrorCode::kNotFound, "no snapshot " + file.string());
    return make_error(ErrorCode::kInternal,
                      "cannot open " + file.string() + ": " + std::strerror(errno));
  }
  std::string data;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  auto damaged = [&](const std::string& why) {
    return make_error(ErrorCode::kInternal, "dedup snapshot " + file.string() + ": " + why);
  };
  constexpr size_t kHeader = sizeof(kMagic) + 24;
  if (data.size() < kHeader + 4 || std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) {
    return damaged("not a snapshot");
  }
  if (get<uint32_t>(data.data() + data.size() - 4) != crc32c(data.data(), data.size() - 4)) {
    return damaged("checksum mismatch");
  }
  int64_t covered = get<int64_t>(data.data() + 8);
  uint64_t count = get<uint64_t>(data.data() + 24);
  if (data.size() != kHeader + count * 32 + 4) return damaged("wrong size");
  std::fill(slots_.get(), slots_.get() + slot_count_, Slot{DedupKey{}, 0});
  head_ = 0;
  size_.store(0);
  // Keep the newest entries when the snapshot holds more than this cache's capacity.
  uint64_t skip = count > capacity_ ? count - capacity_ : 0;
  for (uint64_t n = skip; n < count; ++n) {
    const char* p = data.data() + kHeader + n * 32;
    DedupKey k{get<uint64_t>(p), get<uint64_t>(p + 8)};
    if (empty(k)) return damaged("empty key");
    insert(k, get<int64_t>(p + 16), get<int64_t>(p + 24));
  }
  return covered;
}

}  // namespace tally::processor
