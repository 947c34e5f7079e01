#include "cluster_proxy/src/shard_worker.h"

#include <arpa/inet.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <random>

#include "common/core/host_port.h"
#include "common/metrics/metrics_registry.h"
#include "common/pgclient/conninfo.h"

namespace tally::cluster_proxy {

namespace asio = boost::asio;

bool shard_unavailable_sqlstate(std::string_view s) {
  return s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03" || s == "53300";
}

namespace {

std::string conninfo_for(const std::string& address, const ShardWorkerOptions& o) {
  const HostPortText node = split_host_port(address, "5432");
  const std::string host(node.host);
  unsigned char buf[16];
  // A numeric address as hostaddr: libpq then never resolves a name, which would block the thread.
  bool numeric =
      inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
  return build_conninfo({{numeric ? "hostaddr" : "host", host},
                         {"port", node.port},
                         {"dbname", o.database},
                         {"user", o.user},
                         {"password", o.password},
                         {"application_name", "tally_cluster_proxy"}});
}

std::string result_error(const PGresult* r, std::string& sqlstate) {
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  sqlstate = state != nullptr ? state : "";
  const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  std::string msg = primary != nullptr ? primary : PQresultErrorMessage(r);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

// One ShardCall in flight: see ShardWorker. Owned by shared_ptrs in its pending handlers, and by
// itself while libpq holds a raw pointer to it (an exchange in flight).
class CallOp : public std::enable_shared_from_this<CallOp>, private ResultSink {
 public:
  CallOp(ShardWorker& worker, ShardCall call, ShardCallback done, uint64_t rotation)
      : worker_(worker),
        call_(std::move(call)),
        done_(std::move(done)),
        deadline_(worker.io()),
        backoff_(worker.io()),
        breaker_(worker.breakers().get(call_.shard)),
        rotation_(rotation) {}

  void start() {
    if (!breaker_.allow()) {
      circuit_open_ = true;
      worker_.count_error(call_.shard, "circuit_open");
      int64_t ms = breaker_.retry_after_ms();
      finish(make_error(ErrorCode::kUnavailable,
                        "shard " + call_.shard +
                            " is failing: its circuit breaker is open after repeated failures; "
                            "retry in " +
                            std::to_string(ms > 0 ? ms : 1) + " ms"));
      return;
    }
    deadline_.expires_after(call_.timeout);
    deadline_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->finished_) return;
      std::string why = "shard " + self->call_.shard + " did not answer within " +
                        std::to_string(self->call_.timeout.count()) + " ms";
      self->finish(make_error(ErrorCode::kTimeout, why));
      // The statement may still be running on the shard. Abandoning it quietly would let it run
      // to the end beside the caller's retry (and hold its locks meanwhile): shutting the socket
      // makes the shard proxy cancel it on the server. The connection is never reused.
      if (self->in_exchange_ && self->lease_) self->lease_->abort_exchanges(why);
    });
    attempt();
  }

 private:
  enum class Expect { kPrepare, kExecute };
  struct Pending {
    Expect kind;
    size_t statement;
  };

  void attempt() {
    if (finished_) return;
    if (call_.proxies.empty()) {
      worker_.count_error(call_.shard, "no_proxy");
      finish(make_error(ErrorCode::kUnavailable,
                        "shard " + call_.shard + " has no shard proxy registered"));
      return;
    }
    const std::string& address = call_.proxies[(rotation_ + proxy_offset_) % call_.proxies.size()];
    BackendPool* pool = &worker_.pool(address);
    pool->acquire([self = shared_from_this(), pool](Result<BackendPool::Lease> lease) {
      self->on_lease(pool, std::move(lease));
    });
  }

  void on_lease(BackendPool* pool, Result<BackendPool::Lease> lease) {
    if (!lease.ok()) {
      if (finished_) return;
      // Nothing was sent: any call may move on to the shard's next proxy, then back off.
      ++proxy_offset_;
      if (++connect_failures_ < call_.proxies.size()) {
        attempt();
        return;
      }
      connect_failures_ = 0;
      retry_or_fail(make_error(ErrorCode::kUnavailable,
                               "shard " + call_.shard + ": " + lease.error().message),
                    /*reached_shard=*/false);
      return;
    }
    if (finished_) {
      pool->release(std::move(*lease));
      return;
    }
    pool_ = pool;
    lease_ = std::move(*lease);
    results_.clear();
    exchange_ = 0;
    send_exchange();
  }

  void send_exchange() {
    PGconn* pg = lease_->pg();
    const ShardExchange& ex = call_.exchanges[exchange_];
    pending_.clear();
    current_.assign(ex.statements.size(), StatementResult{});
    bool sent = lease_->set_pipeline(true);
    std::vector<const char*> values;
    size_t payload = 0;
    for (size_t i = 0; sent && i < ex.statements.size(); ++i) {
      const ShardStatement& st = ex.statements[i];
      values.clear();
      payload += st.text.size();
      for (const auto& p : st.params) {
        values.push_back(p ? p->c_str() : nullptr);
        payload += p ? p->size() : 0;
      }
      const int n = static_cast<int>(values.size());
      if (st.prepare) {
        const std::string* name = lease_->prepared(st.text);
        if (name == nullptr) {
          name = &lease_->add_prepared(st.text);
          sent = PQsendPrepare(pg, name->c_str(), st.text.c_str(), n, nullptr) == 1;
          pending_.push_back({Expect::kPrepare, i});
        }
        sent = sent &&
               PQsendQueryPrepared(pg, name->c_str(), n, values.data(), nullptr, nullptr, 0) == 1;
      } else {
        sent = PQsendQueryParams(pg, st.text.c_str(), n, nullptr, values.data(), nullptr, nullptr,
                                 0) == 1;
      }
      pending_.push_back({Expect::kExecute, i});
    }
    sent = sent && PQpipelineSync(pg) == 1;
    if (!sent) {
      std::string why = PQerrorMessage(pg);
      lease_->retire();
      release();
      retry_or_fail(
          make_error(ErrorCode::kUnavailable, "shard " + call_.shard + ": sending failed: " + why),
          /*reached_shard=*/true);
      return;
    }
    in_exchange_ = true;
    self_ = shared_from_this();
    lease_->note_sent(payload);
    lease_->run_exchange(*this);
  }

  void on_result(const PGresult* result) override {
    ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_PIPELINE_SYNC || pending_.empty()) return;
    const Pending& p = pending_.front();
    StatementResult& r = current_[p.statement];
    if (p.kind == Expect::kPrepare) {
      if (status != PGRES_COMMAND_OK) {
        lease_->forget_prepared(call_.exchanges[exchange_].statements[p.statement].text);
        set_error(r, result, status);
      }
      return;
    }
    if (status == PGRES_TUPLES_OK) {
      r.rows = PQntuples(result);
      r.columns = PQnfields(result);
      r.cells.reserve(static_cast<size_t>(r.rows * r.columns));
      for (int row = 0; row < r.rows; ++row) {
        for (int col = 0; col < r.columns; ++col) {
          if (PQgetisnull(result, row, col)) {
            r.cells.emplace_back(std::nullopt);
          } else {
            r.cells.emplace_back(std::string(PQgetvalue(result, row, col),
                                             static_cast<size_t>(PQgetlength(result, row, col))));
          }
        }
      }
    } else if (status != PGRES_COMMAND_OK) {
      set_error(r, result, status);
    }
  }

  static void set_error(StatementResult& r, const PGresult* result, ExecStatusType status) {
    if (!r.ok) return;  // keep the first error
    r.ok = false;
    if (status == PGRES_PIPELINE_ABORTED) {
      r.message = "not run: an earlier statement of the same exchange failed";
      return;
    }
    if (status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR) {
      r.message = result_error(result, r.sqlstate);
      return;
    }
    r.message = std::string("unexpected result status ") + PQresStatus(status);
  }

  void on_step_end() override {
    if (!pending_.empty()) pending_.pop_front();
  }

  void on_exchange_done(Status status) override {
    auto keep = std::move(self_);
    in_exchange_ = false;
    if (finished_) {
      release();
      return;
    }
    if (!status) {
      release();
      retry_or_fail(
          make_error(status.error().code, "shard " + call_.shard + ": " + status.error().message),
          /*reached_shard=*/true);
      return;
    }
    for (const auto& r : current_) {
      if (r.ok) continue;
      if (shard_unavailable_sqlstate(r.sqlstate) || r.sqlstate == "57014") {
        release();
        retry_or_fail(
            make_error(
                r.sqlstate == "57014" ? ErrorCode::kTimeout : ErrorCode::kUnavailable,
                "shard " + call_.shard + ": " + r.message + " (SQLSTATE " + r.sqlstate + ")"),
            /*reached_shard=*/true);
        return;
      }
    }
    results_.push_back(std::move(current_));
    current_.clear();
    if (++exchange_ < call_.exchanges.size()) {
      send_exchange();
      return;
    }
    release();
    finish(std::move(results_));
  }

  void retry_or_fail(Error error, bool reached_shard) {
    const auto& o = worker_.options();
    // A statement the server cancelled for its time (57014) used the call's budget: a retry
    // would only repeat that work.
    if ((reached_shard && !call_.idempotent) || attempt_ >= o.retry_attempts ||
        error.code == ErrorCode::kTimeout) {
      finish(std::move(error));
      return;
    }
    ++attempt_;
    // Exponential backoff with full jitter in [base/2, base * 1.5).
    int64_t base = o.retry_backoff.count() << (attempt_ - 1);
    thread_local std::minstd_rand rng{std::random_device{}()};
    int64_t wait = base / 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(base + 1));
    backoff_.expires_after(std::chrono::milliseconds(wait));
    backoff_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->attempt();
    });
  }

  void release() {
    if (lease_ && pool_ != nullptr) pool_->release(std::move(lease_));
    lease_.reset();
  }

  void finish(Result<ShardCallResults> result) {
    if (finished_) return;
    finished_ = true;
    deadline_.cancel();
    backoff_.cancel();
    if (!in_exchange_) release();
    if (!circuit_open_) {
      if (result.ok()) {
        breaker_.record_success();
      } else if (result.error().code == ErrorCode::kUnavailable ||
                 result.error().code == ErrorCode::kTimeout) {
        breaker_.record_failure();
        worker_.count_error(call_.shard, result.error().code == ErrorCode::kUnavailable
                                             ? "unavailable"
                                             : "timeout");
      }
    }
    auto done = std::move(done_);
    done(std::move(result));
  }

  ShardWorker& worker_;
  ShardCall call_;
  ShardCallback done_;
  asio::steady_timer deadline_;
  asio::steady_timer backoff_;
  CircuitBreaker& breaker_;
  uint64_t rotation_;
  int attempt_ = 0;
  size_t proxy_offset_ = 0;
  size_t connect_failures_ = 0;
  BackendPool* pool_ = nullptr;
  BackendPool::Lease lease_;
  size_t exchange_ = 0;
  std::deque<Pending> pending_;
  std::vector<StatementResult> current_;
  ShardCallResults results_;
  bool finished_ = false;
  bool in_exchange_ = false;
  bool circuit_open_ = false;
  std::shared_ptr<CallOp> self_;
};

std::string consolidation_key(const ShardCall& call) {
  std::string key = call.shard;
  for (const auto& ex : call.exchanges) {
    for (const auto& st : ex.statements) {
      key += '\x1e';
      key += st.text;
      for (const auto& p : st.params) {
        key += '\x1f';
        key += p ? "v" + *p : "n";
      }
    }
  }
  return key;
}

}  // namespace

ShardWorker::ShardWorker(ShardWorkerOptions options, CircuitBreakers& breakers,
                         MetricsRegistry& metrics, PoolGauges& gauges)
    : options_(std::move(options)), breakers_(breakers), metrics_(metrics), gauges_(gauges) {
  consolidated_ = &metrics_.counter(
      "tally_cluster_proxy_consolidated_reads_total",
      "Reads answered by an identical read already in flight instead of reaching a shard");
}

ShardWorker::~ShardWorker() {
  stop();
  // Pools and the operations in pending handlers go before the io_context they use.
  inflight_.clear();
  pools_.clear();
}

void ShardWorker::start() {
  work_ = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
      io_.get_executor());
  thread_ = std::thread([this] { io_.run(); });
}

void ShardWorker::stop() {
  if (!thread_.joinable()) return;
  work_.reset();
  io_.stop();
  thread_.join();
}

void ShardWorker::post(std::function<void()> fn) {
  // On the worker's own thread (a request whose connection lives here): at once, no queueing.
  asio::dispatch(io_, std::move(fn));
}

bool ShardWorker::on_this_thread() {
  return io_.get_executor().running_in_this_thread();
}

BackendPool& ShardWorker::pool(const std::string& address) {
  auto& p = pools_[address];
  if (!p) {
    PoolOptions o;
    o.node = "shard proxy " + address;
    o.conninfo = conninfo_for(address, options_);
    o.max_size = options_.pool_size;
    o.connect_timeout = options_.connect_timeout;
    o.wait_timeout = std::chrono::milliseconds(5000);
    o.gauges = &gauges_;
    p = std::make_unique<BackendPool>(io_, o);
  }
  return *p;
}

void ShardWorker::count_error(const std::string& shard, const char* kind) {
  metrics_
      .counter(
          "tally_cluster_proxy_shard_errors_total",
          "Failed shard calls by shard and kind (unavailable, timeout, circuit_open, no_proxy)",
          {{"shard", shard}, {"kind", kind}})
      .inc();
}

void ShardWorker::call(ShardCall call, ShardCallback done, bool consolidate) {
  const uint64_t rotation = next_rotation_++;
  if (!consolidate || !options_.consolidate_reads) {
    std::make_shared<CallOp>(*this, std::move(call), std::move(done), rotation)->start();
    return;
  }
  std::string key = consolidation_key(call);
  auto [it, first] = inflight_.try_emplace(key);
  it->second.push_back(std::move(done));
  if (!first) {
    consolidated_->inc();
    return;
  }
  auto deliver = [this, key](Result<ShardCallResults> result) {
    auto node = inflight_.extract(key);
    if (node.empty()) return;
    auto& waiters = node.mapped();
    for (size_t i = 0; i + 1 < waiters.size(); ++i) waiters[i](result);
    waiters.back()(std::move(result));
  };
  std::make_shared<CallOp>(*this, std::move(call), std::move(deliver), rotation)->start();
}

}  // namespace tally::cluster_proxy
