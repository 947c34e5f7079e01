#include "common/sql/result_merge.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>

#include "common/sql/numeric_text.h"

namespace tally::sql {
namespace {

bool is_exact_number(uint32_t oid) {
  return oid == kInt2Oid || oid == kInt4Oid || oid == kInt8Oid || oid == kNumericOid ||
         oid == 26 /* oid */;
}

double to_double(const std::string& s) {
  if (s == "NaN") return std::nan("");
  if (s == "Infinity") return HUGE_VAL;
  if (s == "-Infinity") return -HUGE_VAL;
  return std::strtod(s.c_str(), nullptr);
}

std::string format_double(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

int column_index(const SortKey& k, std::size_t ncols) {
  return k.from_end ? static_cast<int>(ncols) - k.column : k.column;
}

struct Accumulator {
  std::optional<Decimal> exact;     // count, and sums/avgs of exact types
  std::optional<double> real;       // sums/avgs of float types
  std::optional<std::string> best;  // min/max
  int64_t count = 0;                // avg
};

}  // namespace

int compare_values(uint32_t oid, const std::string& a, const std::string& b) {
  if (is_exact_number(oid)) {
    auto x = parse_decimal(a);
    auto y = parse_decimal(b);
    if (x.ok() && y.ok()) return compare_decimal(*x, *y);
  }
  if (oid == kFloat4Oid || oid == kFloat8Oid) {
    double x = to_double(a), y = to_double(b);
    // PostgreSQL orders NaN above every other value.
    if (std::isnan(x) || std::isnan(y)) return std::isnan(x) - std::isnan(y);
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  int c = a.compare(b);  // text in the C collation, bool 'f' < 't', ISO dates and timestamps
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

Result<ResultSet> combine_results(const MergePlan& plan, std::vector<ResultSet> shards,
                                  std::size_t max_rows) {
  ResultSet out;
  if (shards.empty()) return out;
  std::size_t total = 0;
  for (const auto& s : shards) total += s.rows.size();
  if (total > max_rows) {
    return make_error(ErrorCode::kResourceExhausted,
                      "the shards returned " + std::to_string(total) +
                          " rows, more than the merge limit of " + std::to_string(max_rows) +
                          "; add a LIMIT or a narrower WHERE");
  }
  const ResultSet& first = shards.front();

  if (!plan.combine) {
    out.columns = first.columns;
    for (auto& s : shards) {
      for (auto& r : s.rows) out.rows.push_back(std::move(r));
    }
  } else {
    // Group the partial rows by their group columns, combining aggregates.
    const auto& pc = first.columns;
    for (const auto& fc : plan.columns) {
      ResultColumn c;
      c.name = fc.name;
      const ResultColumn& src = pc.at(fc.partial);
      c.type_oid = src.type_oid;
      c.type_size = src.type_size;
      c.type_modifier = src.type_modifier;
      if (fc.aggregate && fc.kind == AggregateKind::kCount) {
        c.type_oid = kInt8Oid;
        c.type_size = 8;
        c.type_modifier = -1;
      }
      if (fc.aggregate && fc.kind == AggregateKind::kAvg) {
        bool real = src.type_oid == kFloat4Oid || src.type_oid == kFloat8Oid;
        c.type_oid = real ? kFloat8Oid : kNumericOid;
        c.type_size = real ? 8 : -1;
        c.type_modifier = -1;
      }
      out.columns.push_back(c);
    }
    std::map<std::vector<std::optional<std::string>>, std::size_t> index;
    std::vector<Row> first_rows;
    std::vector<std::vector<Accumulator>> accs;
    for (const auto& s : shards) {
      for (const auto& row : s.rows) {
        std::vector<std::optional<std::string>> key;
        for (int g : plan.group_columns) key.push_back(row.at(g));
        auto [it, inserted] = index.emplace(key, first_rows.size());
        if (inserted) {
          first_rows.push_back(row);
          accs.emplace_back(plan.columns.size());
        }
        auto& acc = accs[it->second];
        for (std::size_t i = 0; i < plan.columns.size(); ++i) {
          const auto& fc = plan.columns[i];
          if (!fc.aggregate) continue;
          const auto& v = row.at(fc.partial);
          const uint32_t oid = pc.at(fc.partial).type_oid;
          auto& a = acc[i];
          switch (fc.kind) {
            case AggregateKind::kCount:
            case AggregateKind::kSum:
            case AggregateKind::kAvg: {
              if (fc.kind == AggregateKind::kAvg) {
                const auto& n = row.at(fc.partial + 1);
                if (n) a.count += std::strtoll(n->c_str(), nullptr, 10);
              }
              if (!v) break;
              if (oid == kFloat4Oid || oid == kFloat8Oid) {
                a.real = a.real.value_or(0.0) + to_double(*v);
              } else if (is_exact_number(oid)) {
                auto d = parse_decimal(*v);
                if (!d.ok()) return make_error(ErrorCode::kUnsupported, d.error().message);
                a.exact = a.exact ? add_decimal(*a.exact, *d) : *d;
              } else {
                return make_error(ErrorCode::kUnsupported,
                                  "cannot combine sum/avg partials of type oid " +
                                      std::to_string(oid) + " across shards (column " + fc.name +
                                      "); pin the query to one video_id");
              }
              break;
            }
            case AggregateKind::kMin:
            case AggregateKind::kMax: {
              if (!v) break;
              int c = a.best ? compare_values(oid, *v, *a.best) : 0;
              if (!a.best || (fc.kind == AggregateKind::kMin ? c < 0 : c > 0)) a.best = *v;
              break;
            }
          }
        }
      }
    }
    if (plan.group_columns.empty() && first_rows.empty()) {
      first_rows.emplace_back(pc.size());
      accs.emplace_back(plan.columns.size());
    }
    for (std::size_t g = 0; g < first_rows.size(); ++g) {
      Row r;
      for (std::size_t i = 0; i < plan.columns.size(); ++i) {
        const auto& fc = plan.columns[i];
        const auto& a = accs[g][i];
        if (!fc.aggregate) {
          r.push_back(first_rows[g].at(fc.partial));
          continue;
        }
        switch (fc.kind) {
          case AggregateKind::kCount:
            r.push_back(a.exact ? format_decimal(*a.exact) : "0");
            break;
          case AggregateKind::kSum:
            if (a.real) {
              r.push_back(format_double(*a.real));
            } else if (a.exact) {
              std::string s = format_decimal(*a.exact);
              if (out.columns[i].type_oid == kInt8Oid) {
                Decimal lim;
                lim.digits = "9223372036854775807";
                Decimal neg = lim;
                neg.negative = true;
                neg.digits = "9223372036854775808";
                if (compare_decimal(*a.exact, lim) > 0 || compare_decimal(*a.exact, neg) < 0) {
                  return make_error(ErrorCode::kInvalidArgument, "bigint out of range");
                }
              }
              r.push_back(s);
            } else {
              r.push_back(std::nullopt);
            }
            break;
          case AggregateKind::kAvg:
            if (a.count == 0) {
              r.push_back(std::nullopt);
            } else if (a.real) {
              r.push_back(format_double(*a.real / static_cast<double>(a.count)));
            } else if (a.exact) {
              r.push_back(format_decimal(divide_decimal_for_avg(*a.exact, a.count)));
            } else {
              r.push_back(std::nullopt);
            }
            break;
          case AggregateKind::kMin:
          case AggregateKind::kMax:
            r.push_back(a.best);
            break;
        }
      }
      out.rows.push_back(std::move(r));
    }
  }
  return out;
}

Result<ResultSet> finish_results(const MergePlan& plan, ResultSet out) {
  if (!plan.sort.empty()) {
    const std::size_t ncols = out.columns.size();
    for (const auto& k : plan.sort) {
      int c = column_index(k, ncols);
      if (c < 0 || static_cast<std::size_t>(c) >= ncols) {
        return make_error(ErrorCode::kInvalidArgument,
                          "ORDER BY position " + std::to_string(c + 1) + " is not in select list");
      }
    }
    std::stable_sort(out.rows.begin(), out.rows.end(), [&](const Row& x, const Row& y) {
      for (const auto& k : plan.sort) {
        int c = column_index(k, ncols);
        const auto& a = x[c];
        const auto& b = y[c];
        if (!a && !b) continue;
        if (!a || !b) {
          bool a_first = !a ? k.nulls_first : !k.nulls_first;
          return a_first;
        }
        int cmp = compare_values(out.columns[c].type_oid, *a, *b);
        if (cmp != 0) return k.descending ? cmp > 0 : cmp < 0;
      }
      return false;
    });
  }
  std::size_t begin = std::min<std::size_t>(static_cast<std::size_t>(plan.offset), out.rows.size());
  std::size_t stop = out.rows.size();
  if (plan.limit) stop = std::min(stop, begin + static_cast<std::size_t>(*plan.limit));
  if (begin > 0 || stop < out.rows.size()) {
    out.rows = std::vector<Row>(std::make_move_iterator(out.rows.begin() + begin),
                                std::make_move_iterator(out.rows.begin() + stop));
  }
  if (plan.hidden_columns > 0) {
    const std::size_t keep = out.columns.size() - plan.hidden_columns;
    out.columns.resize(keep);
    for (auto& r : out.rows) r.resize(keep);
  }
  return out;
}

Result<ResultSet> merge_results(const MergePlan& plan, std::vector<ResultSet> shards,
                                std::size_t max_rows) {
  auto combined = combine_results(plan, std::move(shards), max_rows);
  if (!combined.ok()) return combined;
  return finish_results(plan, std::move(*combined));
}

std::optional<uint32_t> array_type_of(uint32_t oid) {
  static const std::map<uint32_t, uint32_t> arrays = {
      {16, 1000},   {17, 1001},   {18, 1002},   {19, 1003},   {20, 1016},   {21, 1005},
      {23, 1007},   {25, 1009},   {26, 1028},   {700, 1021},  {701, 1022},  {790, 791},
      {1042, 1014}, {1043, 1015}, {1082, 1182}, {1083, 1183}, {1114, 1115}, {1184, 1185},
      {1186, 1187}, {1700, 1231}, {2950, 2951}, {114, 199},   {3802, 3807}};
  auto it = arrays.find(oid);
  if (it == arrays.end()) return std::nullopt;
  return it->second;
}

Result<HavingQuery> having_query(const MergePlan& plan, const ResultSet& combined,
                                 std::size_t bound_parameters) {
  HavingQuery q;
  const HavingPlan& h = *plan.having;
  for (int n : h.parameters) {
    if (n < 1 || static_cast<std::size_t>(n) > bound_parameters) {
      return make_error(ErrorCode::kInvalidArgument, "there is no parameter $" + std::to_string(n));
    }
    q.user_parameters.push_back(n);
  }
  const int first_array = static_cast<int>(h.parameters.size()) + 1;
  std::string unnest, names;
  for (std::size_t k = 0; k < h.columns.size(); ++k) {
    const int c = h.columns[k];
    const auto oid = combined.columns.at(c).type_oid;
    auto array_oid = array_type_of(oid);
    if (!array_oid) {
      return make_error(ErrorCode::kUnsupported,
                        "HAVING over a cross-shard column of type oid " + std::to_string(oid) +
                            " (" + combined.columns.at(c).name +
                            ") is not supported; pin the query to one video_id");
    }
    std::string literal = "{";
    for (std::size_t r = 0; r < combined.rows.size(); ++r) {
      if (r) literal += ',';
      const auto& v = combined.rows[r].at(c);
      if (!v) {
        literal += "NULL";
        continue;
      }
      literal += '"';
      for (char ch : *v) {
        if (ch == '"' || ch == '\\') literal += '\\';
        literal += ch;
      }
      literal += '"';
    }
    literal += '}';
    q.arrays.push_back(std::move(literal));
    q.array_types.push_back(*array_oid);
    unnest += (k ? ", $" : "$") + std::to_string(first_array + static_cast<int>(k));
    names += "c" + std::to_string(k) + ", ";
  }
  if (h.columns.empty()) {  // a condition on constants and parameters only
    q.sql = "SELECT __tally_h.__tally_o FROM generate_series(1, " +
            std::to_string(combined.rows.size()) + ") AS __tally_h(__tally_o) WHERE " + h.predicate;
    return q;
  }
  q.sql = "SELECT __tally_h.__tally_o FROM unnest(" + unnest + ") WITH ORDINALITY AS __tally_h(" +
          names + "__tally_o) WHERE " + h.predicate;
  return q;
}

void filter_groups(ResultSet& combined, const ResultSet& kept) {
  std::vector<bool> keep(combined.rows.size(), false);
  for (const auto& row : kept.rows) {
    if (row.empty() || !row[0]) continue;
    long long o = std::strtoll(row[0]->c_str(), nullptr, 10);
    if (o >= 1 && static_cast<std::size_t>(o) <= keep.size()) keep[o - 1] = true;
  }
  std::vector<Row> rows;
  for (std::size_t i = 0; i < combined.rows.size(); ++i) {
    if (keep[i]) rows.push_back(std::move(combined.rows[i]));
  }
  combined.rows = std::move(rows);
}

}  // namespace tally::sql
