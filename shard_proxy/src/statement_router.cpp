#include "shard_proxy/src/statement_router.h"

#include <cctype>

#include "common/sql/statement_classifier.h"
#include "common/sql/statement_hints.h"

namespace tally::shard_proxy {

Result<StatementTraits> analyze_statement(std::string_view sql, const sql::Classifier& classifier) {
  auto hinted = sql::parse_statement_hints(sql);
  if (!hinted) return hinted.error();
  StatementTraits t;
  const auto& h = hinted->hints;
  t.force_leader = h.route && *h.route == sql::Route::kLeader;
  t.cache_ttl_ms = h.cache_ttl_ms;
  if (t.cache_ttl_ms && *t.cache_ttl_ms == 0) t.cache_ttl_ms.reset();
  t.min_lsn = h.min_lsn.value_or(0);
  std::string_view body = sql.substr(hinted->body_offset);
  t.copy = body.size() >= 4 && (body[0] == 'c' || body[0] == 'C') &&
           (body[1] == 'o' || body[1] == 'O') && (body[2] == 'p' || body[2] == 'P') &&
           (body[3] == 'y' || body[3] == 'Y') &&
           (body.size() == 4 || !std::isalnum(static_cast<unsigned char>(body[4])));
  auto c = classifier.classify(body);
  t.read_only = c.kind == sql::StatementKind::kRead;
  t.session_state = c.kind == sql::StatementKind::kSessionState;
  t.begins_transaction = c.kind == sql::StatementKind::kTransactionBegin;
  t.multi_statement = c.multi_statement;
  return t;
}

}  // namespace tally::shard_proxy
