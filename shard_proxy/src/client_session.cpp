#include "shard_proxy/src/client_session.h"

#include <openssl/rand.h>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "common/cache/result_cache.h"
#include "common/pgwire/md5_auth.h"
#include "shard_proxy/src/proxy_metrics.h"

namespace tally::shard_proxy {

namespace asio = boost::asio;
using pgwire::TargetKind;
using pgwire::TransactionStatus;

namespace {

constexpr size_t kReadChunk = 16 * 1024;
// Stop reading from a client that pipelines faster than we answer once this much is buffered.
constexpr size_t kMaxBufferedInput = 4 * 1024 * 1024;
// A send buffer that grew past this for one large answer is freed once it is written.
constexpr size_t kKeepOutputBytes = 1024 * 1024;

std::string statement_key(std::string_view query, const std::vector<uint32_t>& types) {
  std::string key(query);
  key.push_back('\0');
  for (uint32_t t : types) key += std::to_string(t) + ",";
  return key;
}

std::string_view field(const PGresult* r, int code) {
  const char* v = PQresultErrorField(r, code);
  return v ? std::string_view(v) : std::string_view();
}

}  // namespace

ClientSession::ClientSession(Worker& worker, asio::ip::tcp::socket socket)
    : worker_(worker), socket_(std::move(socket)), hold_timer_(worker.io()) {}

ClientSession::~ClientSession() {
  if (tracking_id_ != 0) worker_.untrack_session(tracking_id_);
  if (process_id_ != 0) worker_.state().unregister_session(process_id_);
  if (counted_) worker_.state().clients.fetch_sub(1);
  if (lease_ && lease_pool_ != nullptr) {
    // Ending mid-transaction: the pool closes the connection, which rolls the transaction back.
    give_back_lease();
  }
}

void ClientSession::give_back_lease() {
  if (shared_lease_) {
    lease_pool_->release_shared(lease_);
  } else {
    lease_pool_->release(std::move(lease_));
  }
  lease_.reset();
  lease_pool_ = nullptr;
  shared_lease_ = false;
}

void ClientSession::start() {
  std::weak_ptr<ClientSession> weak = weak_from_this();
  tracking_id_ = worker_.track_session([weak]() {
    if (auto self = weak.lock()) self->abandon();
  });
  boost::system::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  read_more();
}

// ---------------------------------------------------------------------------------------- I/O

void ClientSession::read_more() {
  if (reading_ || closing_) return;
  if (busy_ && decoder_.buffered() > kMaxBufferedInput) return;  // resumed when the answer is out
  reading_ = true;
  auto space = decoder_.prepare(std::max(kReadChunk, decoder_.bytes_wanted()));
  socket_.async_read_some(asio::buffer(space.data(), space.size()),
                          [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                            self->reading_ = false;
                            if (ec) {
                              // The client left (or its deadline passed and it hung up): whatever
                              // it is running would otherwise go on to the end, holding its locks
                              // beside the client's retry. Cancel it on the server.
                              if (self->busy_) self->cancel_running();
                              self->close();
                              return;
                            }
                            self->decoder_.commit(n);
                            self->process();
                            self->read_more();
                          });
}

void ClientSession::flush_output() {
  if (write_pending_ || out_.empty() || !socket_.is_open()) return;
  write_pending_ = true;
  writing_.swap(out_);
  out_.clear();
  asio::async_write(socket_, asio::buffer(writing_),
                    [self = shared_from_this()](boost::system::error_code ec, size_t) {
                      self->write_pending_ = false;
                      // The two buffers swap roles; one that held a large answer is given back
                      // rather than kept for the session's lifetime.
                      if (self->writing_.capacity() > kKeepOutputBytes) {
                        std::string().swap(self->writing_);
                      }
                      self->writing_.clear();
                      if (ec) {
                        self->close();
                        return;
                      }
                      if (self->closing_ && self->out_.empty()) {
                        boost::system::error_code ignored;
                        self->socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
                        self->socket_.close(ignored);
                        return;
                      }
                      self->flush_output();
                    });
}

void ClientSession::close() {
  closing_ = true;
  if (write_pending_) return;  // the write completion closes
  if (!out_.empty()) {
    flush_output();
    return;
  }
  boost::system::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

void ClientSession::fatal(std::string_view sqlstate, const std::string& message) {
  pgwire::ErrorFields f;
  f.severity = "FATAL";
  f.sqlstate = sqlstate;
  f.message = message;
  pgwire::append_error_response(out_, f);
  close();
}

void ClientSession::protocol_error(const Error& error) {
  // The stream has lost its framing: say why (08P01) and hang up. Other sessions are unaffected.
  fatal(error.code == ErrorCode::kUnsupported ? "0A000" : "08P01", error.message);
}

void ClientSession::process() {
  while (!busy_ && !closing_) {
    auto next = decoder_.next();
    if (!next.ok()) {
      protocol_error(next.error());
      break;
    }
    if (!next->has_value()) break;
    pgwire::FrontendMessage& message = **next;

    if (phase_ != Phase::kReady) {
      if (auto* startup = std::get_if<pgwire::StartupMessage>(&message)) {
        on_startup(*startup);
      } else if (std::holds_alternative<pgwire::SslRequest>(message) ||
                 std::holds_alternative<pgwire::GssEncRequest>(message)) {
        pgwire::append_encryption_refused(out_);
      } else if (auto* cancel = std::get_if<pgwire::CancelRequest>(&message)) {
        worker_.state().cancel_session(cancel->process_id, cancel->secret_key);
        close();
      } else if (auto* auth = std::get_if<pgwire::AuthResponse>(&message);
                 auth != nullptr && phase_ == Phase::kAuthenticating) {
        on_auth_response(auth->payload);
      } else {
        protocol_error(make_error(ErrorCode::kInvalidArgument,
                                  "unexpected " + std::string(pgwire::message_name(message)) +
                                      " before authentication completed"));
      }
      continue;
    }

    std::visit(
        [this](auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, pgwire::Query>) {
            on_query(std::string(m.sql));
          } else if constexpr (std::is_same_v<T, pgwire::Parse>) {
            if (!skip_until_sync_)
              batch_.push_back(
                  ParseMsg{std::string(m.statement), std::string(m.query), m.parameter_types});
          } else if constexpr (std::is_same_v<T, pgwire::Bind>) {
            if (skip_until_sync_) return;
            BindMsg b{std::string(m.portal),
                      std::string(m.statement),
                      m.parameter_formats,
                      {},
                      m.result_formats};
            b.parameters.reserve(m.parameters.size());
            for (const auto& p : m.parameters) {
              b.parameters.push_back(p ? std::optional<std::string>(std::string(*p))
                                       : std::nullopt);
            }
            batch_.push_back(std::move(b));
          } else if constexpr (std::is_same_v<T, pgwire::Describe>) {
            if (!skip_until_sync_)
              batch_.emplace_back(std::in_place_type<DescribeMsg>, m.kind, std::string(m.name));
          } else if constexpr (std::is_same_v<T, pgwire::Execute>) {
            if (!skip_until_sync_) batch_.push_back(ExecuteMsg{std::string(m.portal), m.max_rows});
          } else if constexpr (std::is_same_v<T, pgwire::Close>) {
            if (!skip_until_sync_)
              batch_.emplace_back(std::in_place_type<CloseMsg>, m.kind, std::string(m.name));
          } else if constexpr (std::is_same_v<T, pgwire::Sync>) {
            on_sync();
          } else if constexpr (std::is_same_v<T, pgwire::Flush>) {
            // Responses are produced at Sync; clients that wait for answers after Flush alone are
            // not supported yet (docs/shard-proxy.md).
          } else if constexpr (std::is_same_v<T, pgwire::Terminate>) {
            close();
          } else if constexpr (std::is_same_v<T, pgwire::CopyData> ||
                               std::is_same_v<T, pgwire::CopyDone> ||
                               std::is_same_v<T, pgwire::CopyFail>) {
            // Outside COPY these are ignored, as PostgreSQL does.
          } else {
            protocol_error(make_error(
                ErrorCode::kInvalidArgument,
                "unexpected " + std::string(pgwire::message_name(m)) + " after authentication"));
          }
        },
        message);
  }
  flush_output();
}

// ------------------------------------------------------------------------ startup and auth

void ClientSession::on_startup(const pgwire::StartupMessage& message) {
  if (phase_ != Phase::kStartup) {
    protocol_error(make_error(ErrorCode::kInvalidArgument, "a second StartupMessage"));
    return;
  }
  const auto& config = worker_.state().config();
  auto user = message.parameter("user");
  if (!user || user->empty()) {
    fatal("28000", "no PostgreSQL user name specified in startup packet");
    return;
  }
  user_name_ = std::string(*user);
  auto database = message.parameter("database").value_or(*user);
  if (database != config.database) {
    fatal("3D000", "database \"" + std::string(database) +
                       "\" does not exist (this proxy serves \"" + config.database + "\")");
    return;
  }
  if (worker_.state().clients.fetch_add(1) >= config.max_clients) {
    worker_.state().clients.fetch_sub(1);
    fatal("53300", "sorry, too many clients already (max_clients " +
                       std::to_string(config.max_clients) + ")");
    return;
  }
  counted_ = true;
  user_ = config.user(user_name_);
  phase_ = Phase::kAuthenticating;
  switch (config.auth_method) {
    case AuthMethod::kTrust:
      if (user_ == nullptr) {
        fatal("28000", "role \"" + user_name_ + "\" is not configured on this proxy");
        return;
      }
      authenticated();
      return;
    case AuthMethod::kMd5:
      if (RAND_bytes(md5_salt_.data(), static_cast<int>(md5_salt_.size())) != 1) {
        fatal("XX000", "cannot generate a salt");
        return;
      }
      pgwire::append_authentication_md5_password(out_, md5_salt_);
      return;
    case AuthMethod::kScramSha256: {
      auto exchange =
          user_ != nullptr
              ? pgwire::ScramServerExchange::start(user_name_, user_->scram)
              : pgwire::ScramServerExchange::start_for_unknown_user(user_name_, config.id);
      if (!exchange) {
        fatal("XX000", exchange.error().message);
        return;
      }
      scram_.emplace(std::move(*exchange));
      const std::string_view mechanisms[] = {pgwire::kScramSha256};
      pgwire::append_authentication_sasl(out_, mechanisms);
      return;
    }
  }
}

void ClientSession::on_auth_response(std::string_view payload) {
  const auto& config = worker_.state().config();
  const std::string failed = "password authentication failed for user \"" + user_name_ + "\"";
  if (config.auth_method == AuthMethod::kMd5) {
    // PasswordMessage: "md5" + hex digest, NUL-terminated.
    std::string_view sent = payload.substr(0, payload.find('\0'));
    if (user_ == nullptr ||
        !pgwire::verify_md5_response(user_->name,
                                     pgwire::md5_password_hash(user_->name, user_->password),
                                     md5_salt_, sent)) {
      fatal("28P01", failed);
      return;
    }
    authenticated();
    return;
  }
  if (!scram_) {
    fatal("08P01", "unexpected password message");
    return;
  }
  if (!scram_->succeeded() && scram_->user() == user_name_ && !scram_initial_sent_) {
    scram_initial_sent_ = true;
    auto server_first = scram_->handle_initial_response(payload);
    if (!server_first) {
      fatal(server_first.error().code == ErrorCode::kUnauthenticated ? "28P01" : "08P01",
            server_first.error().message);
      return;
    }
    pgwire::append_authentication_sasl_continue(out_, *server_first);
    return;
  }
  auto server_final = scram_->handle_client_final(payload);
  if (!server_final) {
    fatal(server_final.error().code == ErrorCode::kUnauthenticated ? "28P01" : "08P01",
          server_final.error().code == ErrorCode::kUnauthenticated ? failed
                                                                   : server_final.error().message);
    return;
  }
  pgwire::append_authentication_sasl_final(out_, *server_final);
  authenticated();
}

void ClientSession::authenticated() {
  scram_.reset();
  pgwire::append_authentication_ok(out_);
  for (const auto& [name, value] : worker_.state().server_parameters()) {
    pgwire::append_parameter_status(out_, name, value);
  }
  pgwire::append_parameter_status(out_, "session_authorization", user_name_);
  std::weak_ptr<ClientSession> weak = weak_from_this();
  auto& io = worker_.io();
  auto key = worker_.state().register_session([weak, &io]() {
    asio::post(io, [weak]() {
      if (auto self = weak.lock()) self->cancel_running();
    });
  });
  process_id_ = key.first;
  secret_key_ = key.second;
  pgwire::append_backend_key_data(out_, process_id_, secret_key_);
  pgwire::append_ready_for_query(out_, TransactionStatus::kIdle);
  phase_ = Phase::kReady;
  decoder_.set_phase(pgwire::Phase::kNormal);
}

// ---------------------------------------------------------------------------------- requests

pgwire::TransactionStatus ClientSession::transaction_status() const {
  // A shared connection runs only autocommit reads: its status is other clients' business.
  if (!lease_ || shared_lease_ || !lease_->usable()) return TransactionStatus::kIdle;
  switch (PQtransactionStatus(lease_->pg())) {
    case PQTRANS_INTRANS:
      return TransactionStatus::kInTransaction;
    case PQTRANS_INERROR:
      return TransactionStatus::kFailed;
    default:
      return TransactionStatus::kIdle;
  }
}

void ClientSession::append_error(std::string_view sqlstate, std::string_view message) {
  pgwire::ErrorFields f;
  f.sqlstate = sqlstate;
  f.message = message;
  pgwire::append_error_response(out_, f);
}

void ClientSession::append_error(const Error& error) {
  append_error(error_sqlstate(error.code), error.message);
}

void ClientSession::on_query(std::string sql) {
  if (!batch_.empty()) {
    // A Query in the middle of an extended batch: PostgreSQL would run it; we keep order simple.
    batch_.clear();
  }
  skip_until_sync_ = false;
  response_start_ = out_.size();
  started_ = std::chrono::steady_clock::now();
  auto traits = analyze_statement(sql, *worker_.services().classifier);
  if (!traits) {
    append_error("22023", traits.error().message);
    pgwire::append_ready_for_query(out_, transaction_status());
    return;
  }
  if (traits->copy) {
    append_error("0A000",
                 "COPY is not supported through the shard proxy: its data stream is not relayed; "
                 "run bulk loads and exports against the leader directly");
    pgwire::append_ready_for_query(out_, transaction_status());
    return;
  }
  if (traits->session_state && !lease_) {
    append_error("0A000",
                 "session-level settings (SET, RESET, LISTEN, PREPARE, ...) outside a transaction "
                 "are not supported through transaction pooling: they would leak to other clients. "
                 "Use SET LOCAL inside BEGIN ... COMMIT, or startup options");
    pgwire::append_ready_for_query(out_, transaction_status());
    return;
  }
  if (traits->session_state) dirty_ = true;  // inside a transaction: retire the connection after
  Route route;
  route.want_replica = traits->read_only && !traits->force_leader;
  route.min_lsn = traits->min_lsn;
  if (traits->read_only && traits->cache_ttl_ms && traits->min_lsn == 0) {
    route.cache_ttl_ms = traits->cache_ttl_ms;
  }
  simple_query_ = true;
  cache_key_.clear();
  if (route.cache_ttl_ms && worker_.services().cache != nullptr && !lease_) {
    cache_key_ = "Q" + user_name_ + '\0' + sql;
    if (auto hit = worker_.services().cache->lookup(cache_key_)) {
      out_ += *hit;
      pgwire::append_ready_for_query(out_, TransactionStatus::kIdle);
      if (auto* m = worker_.services().metrics) m->query_done("cache", started_, true);
      return;
    }
  }
  // One autocommit read may share a pipelined connection: it goes as an unnamed extended-protocol
  // statement, whose answer (text rows) the client cannot tell from a simple query's.
  route.shareable = traits->pipelinable() && !lease_ && !dirty_;
  run_on_server(route, [this, sql = std::move(sql),
                        pipelined = route.shareable](BackendPool::Lease conn) {
    steps_.clear();
    conn->note_sent(sql.size());
    if (pipelined) {
      if (!conn->set_pipeline(true) ||
          PQsendQueryParams(conn->pg(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) !=
              1 ||
          PQpipelineSync(conn->pg()) != 1) {
        exchange_finished(
            make_error(ErrorCode::kUnavailable,
                       "cannot send to " + conn->node() + ": " + PQerrorMessage(conn->pg())));
        return;
      }
      conn->run_exchange(*this);
      return;
    }
    if (!conn->set_pipeline(false) || PQsendQuery(conn->pg(), sql.c_str()) != 1) {
      exchange_finished(make_error(ErrorCode::kUnavailable, "cannot send to " + conn->node() +
                                                                ": " + PQerrorMessage(conn->pg())));
      return;
    }
    conn->run_exchange(*this);
  });
}

void ClientSession::on_sync() {
  if (skip_until_sync_) {
    skip_until_sync_ = false;
    pgwire::append_ready_for_query(out_, transaction_status());
    return;
  }
  response_start_ = out_.size();
  started_ = std::chrono::steady_clock::now();
  simple_query_ = false;
  steps_.clear();
  Route route;
  bool all_reads = true;
  bool all_shareable = true;
  bool any_execute = false;
  std::optional<uint32_t> ttl;
  bool all_cached = true;
  // The cache key is built only for batches that may be cached: most are not.
  bool build_key = false;
  if (worker_.services().cache != nullptr && !lease_) {
    for (const auto& message : batch_) {
      const std::string* query = nullptr;
      if (auto* p = std::get_if<ParseMsg>(&message)) query = &p->query;
      if (auto* b = std::get_if<BindMsg>(&message)) {
        auto it = statements_.find(b->statement);
        if (it != statements_.end()) query = &it->second->query;
      }
      if (query != nullptr && query->find("cache_ttl_ms") != std::string::npos) build_key = true;
    }
  }
  cache_key_.clear();
  if (build_key) cache_key_ = "E" + user_name_ + '\0';

  auto error_step = [this](std::string_view sqlstate, const std::string& message) {
    Step s;
    s.kind = StepKind::kError;
    pgwire::ErrorFields f;
    f.sqlstate = sqlstate;
    f.message = message;
    pgwire::append_error_response(s.bytes, f);
    steps_.push_back(std::move(s));
  };
  auto local_step = [this](auto append) {
    Step s;
    s.kind = StepKind::kLocal;
    append(s.bytes);
    steps_.push_back(std::move(s));
  };

  for (auto& message : batch_) {
    bool stop = false;
    if (auto* p = std::get_if<ParseMsg>(&message)) {
      if (!p->name.empty() && statements_.count(p->name)) {
        error_step("42P05", "prepared statement \"" + p->name + "\" already exists");
        break;
      }
      // Drivers re-parse the same unnamed statement for every execution: keep the analysed one.
      auto& slot = statements_[p->name];
      if (!slot || slot->query != p->query || slot->types != p->types) {
        slot = std::make_shared<Statement>(
            Statement{p->query, p->types, statement_key(p->query, p->types),
                      analyze_statement(p->query, *worker_.services().classifier)});
      }
      auto st = slot;
      Step s;
      s.kind = StepKind::kPrepare;
      s.statement = st;
      s.statement_name = p->name;
      steps_.push_back(std::move(s));
      if (build_key) cache_key_ += "P" + st->key + '\0';
    } else if (auto* b = std::get_if<BindMsg>(&message)) {
      auto it = statements_.find(b->statement);
      if (it == statements_.end()) {
        error_step("26000", "prepared statement \"" + b->statement + "\" does not exist");
        break;
      }
      int result_format = 0;
      if (!b->result_formats.empty()) {
        result_format = b->result_formats[0];
        for (int16_t f : b->result_formats) {
          if (f != result_format) {
            error_step("0A000",
                       "mixed text and binary result formats in one Bind are not supported through "
                       "the proxy; ask for all-text or all-binary results");
            stop = true;
            break;
          }
        }
        if (stop) break;
      }
      auto portal = std::make_shared<Portal>();
      portal->statement = it->second;
      portal->parameter_formats = b->parameter_formats;
      portal->parameters = std::move(b->parameters);
      portal->result_format = result_format;
      portals_[b->portal] = portal;
      local_step([](std::string& out) { pgwire::append_bind_complete(out); });
      steps_.back().portal = portal;
      if (build_key) {
        cache_key_ += "B" + it->second->key + '\0';
        for (int16_t f : portal->parameter_formats) cache_key_ += std::to_string(f) + ",";
        for (const auto& v : portal->parameters) {
          if (v) {
            cache_key_ += std::to_string(v->size()) + ":" + *v;
          } else {
            cache_key_ += "N";
          }
        }
        cache_key_ += "R" + std::to_string(result_format) + '\0';
      }
    } else if (auto* d = std::get_if<DescribeMsg>(&message)) {
      Step s;
      if (d->kind == TargetKind::kStatement) {
        auto it = statements_.find(d->name);
        if (it == statements_.end()) {
          error_step("26000", "prepared statement \"" + d->name + "\" does not exist");
          break;
        }
        s.kind = StepKind::kDescribeStatement;
        s.statement = it->second;
        if (build_key) cache_key_ += "DS" + it->second->key + '\0';
      } else {
        auto it = portals_.find(d->name);
        if (it == portals_.end()) {
          error_step("34000", "portal \"" + d->name + "\" does not exist");
          break;
        }
        s.kind = StepKind::kDescribePortal;
        s.portal = it->second;
        s.statement = it->second->statement;
        if (build_key) cache_key_ += "DP" + d->name + '\0';
      }
      steps_.push_back(std::move(s));
    } else if (auto* e = std::get_if<ExecuteMsg>(&message)) {
      auto it = portals_.find(e->portal);
      if (it == portals_.end()) {
        error_step("34000", "portal \"" + e->portal + "\" does not exist");
        break;
      }
      Step s;
      s.kind = StepKind::kExecute;
      s.portal = it->second;
      s.statement = it->second->statement;
      s.max_rows = e->max_rows;
      any_execute = true;
      const auto& traits = s.statement->traits;
      if (!traits) {
        error_step("22023", traits.error().message);
        break;
      }
      if (traits->copy) {
        error_step("0A000",
                   "COPY is not supported through the shard proxy: its data stream is not relayed; "
                   "run bulk loads and exports against the leader directly");
        break;
      }
      if (traits->session_state && !lease_) {
        error_step("0A000",
                   "session-level settings outside a transaction are not supported through "
                   "transaction pooling; use SET LOCAL inside BEGIN ... COMMIT");
        break;
      }
      if (traits->session_state) dirty_ = true;
      all_reads = all_reads && traits->read_only && !traits->force_leader;
      all_shareable = all_shareable && traits->pipelinable();
      route.min_lsn = std::max(route.min_lsn, traits->min_lsn);
      if (traits->cache_ttl_ms && traits->read_only) {
        ttl = ttl ? std::min(*ttl, *traits->cache_ttl_ms) : *traits->cache_ttl_ms;
      } else {
        all_cached = false;
      }
      if (build_key) cache_key_ += "X" + e->portal + ":" + std::to_string(e->max_rows) + '\0';
      if (e->max_rows > 0) all_cached = false;
      steps_.push_back(std::move(s));
    } else if (auto* c = std::get_if<CloseMsg>(&message)) {
      if (c->kind == TargetKind::kStatement) {
        statements_.erase(c->name);
      } else {
        portals_.erase(c->name);
      }
      local_step([](std::string& out) { pgwire::append_close_complete(out); });
      if (build_key) cache_key_ += "C" + c->name + '\0';
    }
  }
  batch_.clear();

  // Steps that need no server: answer locally.
  bool needs_server = false;
  for (const auto& s : steps_) {
    if (s.kind == StepKind::kError) break;
    if (s.kind == StepKind::kPrepare || s.kind == StepKind::kDescribeStatement ||
        s.kind == StepKind::kExecute ||
        (s.kind == StepKind::kDescribePortal && !s.portal->suspended)) {
      needs_server = true;
    }
  }
  bool has_error = !steps_.empty() && steps_.back().kind == StepKind::kError;
  route.want_replica = any_execute && all_reads;
  route.shareable = any_execute && all_shareable && !has_error && !lease_ && !dirty_;
  if (any_execute && all_reads && all_cached && ttl && route.min_lsn == 0 && !has_error) {
    route.cache_ttl_ms = ttl;
  }
  if (!needs_server) {
    failed_ = false;
    emitted_until_ = 0;
    emit_locals_until(steps_.size());
    pgwire::append_ready_for_query(out_, transaction_status());
    if (!lease_ || transaction_status() == TransactionStatus::kIdle) {
      for (auto it = portals_.begin(); it != portals_.end();) {
        it = it->second->suspended ? std::next(it) : portals_.erase(it);
      }
    }
    steps_.clear();  // answered: nothing of this batch may be emitted again
    return;
  }
  if (route.cache_ttl_ms && build_key) {
    if (auto hit = worker_.services().cache->lookup(cache_key_)) {
      out_ += *hit;
      pgwire::append_ready_for_query(out_, TransactionStatus::kIdle);
      if (auto* m = worker_.services().metrics) m->query_done("cache", started_, true);
      steps_.clear();
      return;
    }
  } else {
    cache_key_.clear();
  }
  run_on_server(route, [this](BackendPool::Lease conn) { issue_batch(conn); });
}

void ClientSession::run_on_server(Route route, std::function<void(BackendPool::Lease)> issue) {
  route_ = route;
  issue_ = issue;
  if (route.want_replica) original_steps_ = steps_;  // only a read may be replayed
  retry_on_leader_ = false;
  keep_alive_ = shared_from_this();
  busy_ = true;
  failed_ = false;
  server_steps_.clear();
  server_pos_ = 0;
  emitted_until_ = 0;
  cache_ttl_ms_ = route.cache_ttl_ms;
  if (lease_) {
    on_replica_ = false;
    if (lease_->node() != "leader " + worker_.leader_address()) {
      // The leader changed (failover, switchover) during this transaction: it must not go on, let
      // alone commit, on the old leader. Closing the connection rolls it back there.
      std::string node = lease_->node();
      lease_->retire();
      give_back_lease();
      failure_sqlstate_ = "57P01";
      exchange_finished(make_error(
          ErrorCode::kUnavailable,
          "the leader of shard " + worker_.state().config().shard + " changed to " +
              worker_.leader_address() + " during this transaction; it was rolled back on " +
              node.substr(node.find(' ') + 1) + ". Retry the transaction"));
      return;
    }
    issue(lease_);
    return;
  }
  bool replica = route.want_replica && worker_.state().replica_serves_reads(route.min_lsn);
  BackendPool* pool = replica ? worker_.pool(*user_, true) : nullptr;
  if (pool == nullptr) {
    replica = false;
    if (worker_.state().leader_paused()) {
      hold_for_leader(std::move(route), std::move(issue));
      return;
    }
    pool = worker_.pool(*user_, false);
  }
  if (route.shareable) {
    if (auto shared = pool->acquire_shared()) {
      lease_ = std::move(shared);
      lease_pool_ = pool;
      shared_lease_ = true;
      on_replica_ = replica;
      if (auto* m = worker_.services().metrics) m->pipelined(lease_->in_flight() > 0);
      issue(lease_);
      return;
    }
  }
  auto self = shared_from_this();
  auto on_leased = [self, issue, pool, replica, route](Result<BackendPool::Lease> lease) {
    if (self->closing_ && !self->socket_.is_open()) {
      // The client left while waiting: give the connection back and let the session go.
      if (lease) pool->release(std::move(*lease));
      self->busy_ = false;
      self->keep_alive_.reset();
      return;
    }
    if (!lease && replica) {
      // The replica refused: reads never fail for that, they go to the leader (held while the
      // shard is paused, like any leader work).
      Route leader_route = route;
      leader_route.want_replica = false;
      self->run_on_server(leader_route, issue);
      return;
    }
    if (!lease) {
      self->exchange_finished(lease.error());
      return;
    }
    self->lease_ = std::move(*lease);
    self->lease_pool_ = pool;
    self->on_replica_ = replica;
    issue(self->lease_);
  };
  pool->acquire(std::move(on_leased));
}

void ClientSession::hold_for_leader(Route route, std::function<void(BackendPool::Lease)> issue) {
  // Contract 8: while the shard is paused (switchover) or failing over, new leader work waits,
  // bounded, and proceeds against whatever leader serves when the pause ends.
  const auto& config = worker_.state().config();
  auto deadline = started_ + std::chrono::milliseconds(config.pause_hold_ms);
  if (std::chrono::steady_clock::now() >= deadline) {
    failure_sqlstate_ = "57P03";
    exchange_finished(make_error(ErrorCode::kUnavailable,
                                 "shard " + config.shard + " is " + worker_.state().shard_state() +
                                     " and did not resume within pause_hold_ms (" +
                                     std::to_string(config.pause_hold_ms) +
                                     " ms); nothing was sent to the leader, retry later"));
    return;
  }
  auto self = shared_from_this();
  hold_id_ = worker_.hold([self, route, issue]() {
    self->hold_id_ = 0;
    self->hold_timer_.cancel();
    self->run_on_server(route, issue);
  });
  hold_timer_.expires_at(deadline);
  hold_timer_.async_wait([self, route, issue](boost::system::error_code ec) {
    if (ec || self->hold_id_ == 0) return;
    self->worker_.unhold(self->hold_id_);
    self->hold_id_ = 0;
    self->run_on_server(route, issue);  // past the deadline: fails with 57P03 unless resumed
  });
}

const std::string* ClientSession::ensure_prepared(BackendConnection& conn,
                                                  const Statement& statement, size_t before_step) {
  if (const std::string* name = conn.prepared(statement.key)) return name;
  // Empty on a shared connection where another read is preparing it: the unnamed statement.
  const std::string& name = conn.add_prepared(statement.key);
  if (PQsendPrepare(conn.pg(), name.c_str(), statement.query.c_str(),
                    static_cast<int>(statement.types.size()),
                    reinterpret_cast<const Oid*>(statement.types.data())) != 1) {
    return nullptr;
  }
  Step implicit;
  implicit.kind = StepKind::kPrepare;
  implicit.implicit = true;
  implicit.on_server = true;
  if (!name.empty()) implicit.prepared_key = statement.key;
  steps_.insert(steps_.begin() + static_cast<std::ptrdiff_t>(before_step), std::move(implicit));
  server_steps_.push_back(before_step);
  return &name;
}

void ClientSession::issue_batch(BackendPool::Lease& lease) {
  BackendConnection& conn = *lease;
  PGconn* pg = conn.pg();
  size_t payload = 0;  // parameter bytes sent (statement texts are bounded by the decoder)
  auto broken = [this, &conn]() {
    exchange_finished(make_error(ErrorCode::kUnavailable, "cannot send to " + conn.node() + ": " +
                                                              PQerrorMessage(conn.pg())));
  };
  if (!conn.set_pipeline(true)) {
    broken();
    return;
  }
  // Describe of a portal that this batch also executes: the Execute result carries the row
  // description, so the Describe costs no round trip.
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (steps_[i].kind != StepKind::kDescribePortal) continue;
    for (size_t j = i + 1; j < steps_.size(); ++j) {
      if (steps_[j].kind == StepKind::kExecute && steps_[j].portal == steps_[i].portal &&
          !steps_[i].portal->suspended) {
        steps_[j].describe_rows = true;
        steps_[i].kind = StepKind::kLocal;  // nothing of its own to send
        break;
      }
    }
  }
  for (size_t i = 0; i < steps_.size(); ++i) {
    Step& s = steps_[i];
    if (s.kind == StepKind::kError) break;
    switch (s.kind) {
      case StepKind::kLocal:
      case StepKind::kError:
        break;
      case StepKind::kPrepare: {
        if (conn.prepared(s.statement->key) != nullptr) {
          s.kind = StepKind::kLocal;
          pgwire::append_parse_complete(s.bytes);
          break;
        }
        const std::string& name = conn.add_prepared(s.statement->key);
        if (name.empty()) {
          // Shared connection, another read is preparing it: the Execute prepares the unnamed
          // statement for itself (a bad statement's error then comes at Bind, not Parse).
          s.kind = StepKind::kLocal;
          pgwire::append_parse_complete(s.bytes);
          break;
        }
        s.prepared_key = s.statement->key;
        if (PQsendPrepare(pg, name.c_str(), s.statement->query.c_str(),
                          static_cast<int>(s.statement->types.size()),
                          reinterpret_cast<const Oid*>(s.statement->types.data())) != 1) {
          broken();
          return;
        }
        s.on_server = true;
        server_steps_.push_back(i);
        break;
      }
      case StepKind::kDescribeStatement:
      case StepKind::kDescribePortal:
      case StepKind::kExecute: {
        if (s.portal && s.portal->suspended && s.kind != StepKind::kDescribeStatement) {
          break;  // served from the rows the proxy kept
        }
        size_t before = steps_.size();
        const std::string* name = ensure_prepared(conn, *s.statement, i);
        if (name == nullptr) {
          broken();
          return;
        }
        if (steps_.size() != before) ++i;  // an implicit prepare went in before this step
        Step& step = steps_[i];
        int rc;
        if (step.kind == StepKind::kExecute) {
          const Portal& p = *step.portal;
          size_t n = p.parameters.size();
          std::vector<const char*> values(n);
          std::vector<int> lengths(n);
          std::vector<int> formats(n);
          for (size_t k = 0; k < n; ++k) {
            values[k] = p.parameters[k] ? p.parameters[k]->c_str() : nullptr;
            lengths[k] = p.parameters[k] ? static_cast<int>(p.parameters[k]->size()) : 0;
            payload += static_cast<size_t>(lengths[k]);
            formats[k] = p.parameter_formats.empty()       ? 0
                         : p.parameter_formats.size() == 1 ? p.parameter_formats[0]
                                                           : p.parameter_formats[k];
          }
          rc = PQsendQueryPrepared(pg, name->c_str(), static_cast<int>(n), values.data(),
                                   lengths.data(), formats.data(), p.result_format);
        } else {
          rc = PQsendDescribePrepared(pg, name->c_str());
        }
        if (rc != 1) {
          broken();
          return;
        }
        step.on_server = true;
        server_steps_.push_back(i);
        break;
      }
    }
  }
  if (PQpipelineSync(pg) != 1) {
    broken();
    return;
  }
  conn.note_sent(payload);
  conn.run_exchange(*this);
}

void ClientSession::emit_locals_until(size_t step) {
  for (; emitted_until_ < step && emitted_until_ < steps_.size(); ++emitted_until_) {
    Step& s = steps_[emitted_until_];
    if (failed_ || s.on_server) continue;
    if (s.kind == StepKind::kLocal) {
      out_ += s.bytes;
    } else if (s.kind == StepKind::kError) {
      out_ += s.bytes;
      failed_ = true;
    } else if (s.kind == StepKind::kExecute && s.portal && s.portal->suspended) {
      emit_suspended(*s.portal, s.max_rows);
    } else if (s.kind == StepKind::kDescribePortal && s.portal && s.portal->suspended) {
      // The row description went out with the first Execute; a late Describe gets NoData-safe
      // behaviour only if the client asks before any rows, which it cannot for a suspended portal.
      pgwire::append_no_data(out_);
    }
  }
}

void ClientSession::emit_suspended(Portal& portal, int32_t max_rows) {
  size_t take = portal.pending_rows.size();
  if (max_rows > 0) take = std::min(take, static_cast<size_t>(max_rows));
  for (size_t i = 0; i < take; ++i) out_ += portal.pending_rows[i];
  portal.pending_rows.erase(portal.pending_rows.begin(),
                            portal.pending_rows.begin() + static_cast<std::ptrdiff_t>(take));
  portal.rows_sent += take;
  if (portal.pending_rows.empty()) {
    portal.suspended = false;
    pgwire::append_command_complete(out_, "SELECT " + std::to_string(portal.rows_sent));
  } else {
    pgwire::append_portal_suspended(out_);
  }
}

void ClientSession::append_result_error(const PGresult* r) {
  pgwire::ErrorFields f;
  std::string_view severity = field(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  f.severity = severity.empty() ? "ERROR" : severity;
  f.sqlstate = field(r, PG_DIAG_SQLSTATE);
  if (f.sqlstate.empty()) f.sqlstate = "XX000";
  std::string message(field(r, PG_DIAG_MESSAGE_PRIMARY));
  if (message.empty()) message = PQresultErrorMessage(r);
  f.message = message;
  f.detail = field(r, PG_DIAG_MESSAGE_DETAIL);
  f.hint = field(r, PG_DIAG_MESSAGE_HINT);
  std::string_view position = field(r, PG_DIAG_STATEMENT_POSITION);
  if (!position.empty()) f.position = std::atoi(std::string(position).c_str());
  pgwire::append_error_response(out_, f);
  if (auto* m = worker_.services().metrics) m->error(f.sqlstate);
}

void ClientSession::append_row_description(const PGresult* r, int16_t format) {
  const int fields = PQnfields(r);
  std::vector<pgwire::FieldDescription> desc(static_cast<size_t>(fields));
  for (int i = 0; i < fields; ++i) {
    auto& d = desc[static_cast<size_t>(i)];
    d.name = PQfname(r, i);
    d.table_oid = PQftable(r, i);
    d.column = static_cast<int16_t>(PQftablecol(r, i));
    d.type_oid = PQftype(r, i);
    d.type_size = static_cast<int16_t>(PQfsize(r, i));
    d.type_modifier = PQfmod(r, i);
    d.format = format >= 0 ? format : static_cast<int16_t>(PQfformat(r, i));
  }
  pgwire::append_row_description(out_, desc);
}

void ClientSession::append_tuples(const PGresult* r, bool describe, Portal* portal,
                                  int32_t max_rows) {
  const int fields = PQnfields(r);
  if (describe) append_row_description(r);
  const int rows = PQntuples(r);
  std::vector<std::optional<std::string_view>> values(static_cast<size_t>(fields));
  int emit = rows;
  if (max_rows > 0 && rows > max_rows) emit = max_rows;
  for (int row = 0; row < rows; ++row) {
    for (int col = 0; col < fields; ++col) {
      values[static_cast<size_t>(col)] =
          PQgetisnull(r, row, col)
              ? std::nullopt
              : std::optional<std::string_view>(std::string_view(
                    PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col))));
    }
    if (row < emit) {
      pgwire::append_data_row(out_, values);
    } else if (portal != nullptr) {
      std::string encoded;
      pgwire::append_data_row(encoded, values);
      portal->pending_rows.push_back(std::move(encoded));
    }
  }
  if (emit < rows && portal != nullptr) {
    portal->suspended = true;
    portal->rows_sent = static_cast<size_t>(emit);
    pgwire::append_portal_suspended(out_);
    return;
  }
  pgwire::append_command_complete(out_, PQcmdStatus(const_cast<PGresult*>(r)));
}

void ClientSession::on_notice(const PGresult* notice) {
  pgwire::ErrorFields f;
  f.severity = field(notice, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (f.severity.empty()) f.severity = "NOTICE";
  f.sqlstate = field(notice, PG_DIAG_SQLSTATE);
  f.message = field(notice, PG_DIAG_MESSAGE_PRIMARY);
  f.detail = field(notice, PG_DIAG_MESSAGE_DETAIL);
  f.hint = field(notice, PG_DIAG_MESSAGE_HINT);
  pgwire::append_notice_response(out_, f);
}

bool ClientSession::replica_going_away(const PGresult* r) {
  if (!on_replica_ || out_.size() != response_start_ || failed_) return false;
  std::string_view code = field(r, PG_DIAG_SQLSTATE);
  // 57P01-57P03: shutdown, crash of the postmaster, cannot connect now; 08: connection failures.
  if (code.substr(0, 3) != "57P" && code.substr(0, 2) != "08") return false;
  retry_on_leader_ = true;
  return true;
}

void ClientSession::on_result(const PGresult* r) {
  ExecStatusType status = PQresultStatus(r);
  if (retry_on_leader_) return;
  if (status == PGRES_FATAL_ERROR && replica_going_away(r)) return;
  if (simple_query_) {
    switch (status) {
      case PGRES_TUPLES_OK:
        append_tuples(r, true, nullptr, 0);
        break;
      case PGRES_COMMAND_OK:
        pgwire::append_command_complete(out_, PQcmdStatus(const_cast<PGresult*>(r)));
        break;
      case PGRES_EMPTY_QUERY:
        pgwire::append_empty_query_response(out_);
        break;
      case PGRES_PIPELINE_SYNC:     // a pipelined read's end
      case PGRES_PIPELINE_ABORTED:  // after its error, already reported
        break;
      default:
        append_result_error(r);
        failed_ = true;
        break;
    }
    return;
  }
  if (status == PGRES_PIPELINE_SYNC) {
    emit_locals_until(steps_.size());
    return;
  }
  if (server_pos_ >= server_steps_.size()) return;  // nothing expected: ignore
  size_t index = server_steps_[server_pos_];
  emit_locals_until(index);
  Step& s = steps_[index];
  if (failed_ || status == PGRES_PIPELINE_ABORTED) {
    if (!s.prepared_key.empty()) lease_->forget_prepared(s.prepared_key);
    if (s.kind == StepKind::kPrepare && !s.implicit) statements_.erase(s.statement_name);
    return;
  }
  if (status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR ||
      status == PGRES_BAD_RESPONSE) {
    append_result_error(r);
    failed_ = true;
    if (!s.prepared_key.empty()) lease_->forget_prepared(s.prepared_key);
    if (s.kind == StepKind::kPrepare && !s.implicit) statements_.erase(s.statement_name);
    return;
  }
  switch (s.kind) {
    case StepKind::kPrepare:
      if (!s.prepared_key.empty()) lease_->confirm_prepared(s.prepared_key);
      if (!s.implicit) pgwire::append_parse_complete(out_);
      break;
    case StepKind::kDescribeStatement: {
      int n = PQnparams(r);
      std::vector<uint32_t> types(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) types[static_cast<size_t>(i)] = PQparamtype(r, i);
      pgwire::append_parameter_description(out_, types);
      if (PQnfields(r) > 0) {
        append_row_description(r);
      } else {
        pgwire::append_no_data(out_);
      }
      break;
    }
    case StepKind::kDescribePortal:
      // A statement's description says text for every column; the portal's Bind chose the format.
      if (PQnfields(r) > 0) {
        append_row_description(r, static_cast<int16_t>(s.portal->result_format));
      } else {
        pgwire::append_no_data(out_);
      }
      break;
    case StepKind::kExecute:
      if (status == PGRES_TUPLES_OK) {
        append_tuples(r, s.describe_rows, s.portal.get(), s.max_rows);
      } else if (status == PGRES_EMPTY_QUERY) {
        if (s.describe_rows) pgwire::append_no_data(out_);
        pgwire::append_empty_query_response(out_);
      } else {
        if (s.describe_rows) pgwire::append_no_data(out_);
        pgwire::append_command_complete(out_, PQcmdStatus(const_cast<PGresult*>(r)));
      }
      break;
    default:
      break;
  }
}

void ClientSession::on_step_end() {
  if (simple_query_ || server_pos_ >= server_steps_.size()) return;
  emitted_until_ = std::max(emitted_until_, server_steps_[server_pos_] + 1);
  ++server_pos_;
}

void ClientSession::on_exchange_done(Status status) {
  exchange_finished(std::move(status));
}

void ClientSession::exchange_finished(Status status) {
  // Released when this function returns (unless a replay on the leader takes it again).
  std::shared_ptr<ClientSession> self = std::move(keep_alive_);
  if (lease_ && on_replica_ &&
      (retry_on_leader_ ||
       (!status && !lease_->usable() && out_.size() == response_start_ && !failed_))) {
    retry_on_leader_ = false;
    lease_->retire();
    // The replica connection broke before anything was answered (the replica died or restarted
    // and the monitor has not noticed yet). A read is safe to replay: run it on the leader.
    give_back_lease();
    steps_ = original_steps_;
    Route leader_route = route_;
    leader_route.want_replica = false;
    auto issue = issue_;
    run_on_server(leader_route, std::move(issue));
    return;
  }
  if (!status) {
    if (!failed_) {
      // Answers for the messages before the first one that needed the server, then the error.
      size_t first_server = server_steps_.empty() ? steps_.size() : server_steps_.front();
      for (size_t i = 0; i < first_server && server_steps_.empty(); ++i) {
        const Step& st = steps_[i];
        if (st.kind == StepKind::kPrepare || st.kind == StepKind::kDescribeStatement ||
            st.kind == StepKind::kDescribePortal || st.kind == StepKind::kExecute) {
          first_server = i;
          break;
        }
      }
      emit_locals_until(first_server);
      std::string sqlstate = !failure_sqlstate_.empty() ? failure_sqlstate_
                             : status.error().code == ErrorCode::kResourceExhausted ? "53300"
                                                                                    : "08006";
      append_error(sqlstate, status.error().message);
      if (auto* m = worker_.services().metrics) m->error(sqlstate);
    }
    failed_ = true;
    // Statements that never reached a server must not look prepared to the client.
    for (const auto& s : steps_) {
      if (s.kind == StepKind::kPrepare && !s.implicit && !s.on_server) {
        statements_.erase(s.statement_name);
      }
    }
  }
  TransactionStatus txn = transaction_status();
  if (lease_ && (txn == TransactionStatus::kIdle || !lease_->usable())) {
    // SET, PREPARE, LISTEN, ... inside the transaction changed the server session: no other
    // client may inherit it, so the connection closes instead of going back to the pool.
    if (dirty_) lease_->retire();
    dirty_ = false;
    give_back_lease();
    txn = TransactionStatus::kIdle;
  }
  if (status && !failed_ && cache_ttl_ms_ && !cache_key_.empty() &&
      txn == TransactionStatus::kIdle && worker_.services().cache != nullptr) {
    worker_.services().cache->insert(
        cache_key_, std::make_shared<const std::string>(out_.substr(response_start_)),
        std::chrono::milliseconds(*cache_ttl_ms_));
  }
  pgwire::append_ready_for_query(out_, txn);
  if (txn == TransactionStatus::kIdle) {
    // Portals end with the transaction, except the rows of a suspended one the proxy keeps.
    for (auto it = portals_.begin(); it != portals_.end();) {
      it = it->second->suspended ? std::next(it) : portals_.erase(it);
    }
  }
  if (auto* m = worker_.services().metrics) {
    m->query_done(on_replica_ ? "replica" : "leader", started_, status.ok() && !failed_);
  }
  steps_.clear();
  server_steps_.clear();
  failure_sqlstate_.clear();
  busy_ = false;
  flush_output();
  process();
  read_more();
}

void ClientSession::abandon() {
  hold_id_ = 0;
  lease_.reset();  // its pool is going away too; the connection closes with it
  lease_pool_ = nullptr;
  shared_lease_ = false;
  keep_alive_.reset();
}

void ClientSession::cancel_running() {
  if (!busy_ || !lease_ || worker_.services().blocking == nullptr) return;
  // On a shared connection the server may be running another client's read: cancel only while
  // this one is first in line. (A cancel can still land just after it finished, on the next
  // read in line, as with any transaction-pooling proxy; that read fails with 57014.)
  if (shared_lease_ && !lease_->first_in_line(this)) return;
  std::shared_ptr<PGcancel> cancel(PQgetCancel(lease_->pg()), &PQfreeCancel);
  if (!cancel) return;
  // PQcancel opens a connection and waits: never on the io thread.
  asio::post(*worker_.services().blocking, [cancel]() {
    char err[256];
    PQcancel(cancel.get(), err, sizeof(err));
  });
}

}  // namespace tally::shard_proxy
