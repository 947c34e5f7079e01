"""psycopg2 (Debian's python3-psycopg2) against the cluster proxy's analyst endpoint and against one
PostgreSQL holding the same data. psycopg2 speaks the simple query protocol and interpolates its
parameters on the client, so this checks its start-up queries, its quoting and its type casts
(Decimal for numeric, datetime for timestamptz) through the proxy. Every answer must equal the
single database's. Run by analyst_sql_integration_test:
    /usr/bin/python3 analyst_psycopg2_check.py PROXY_DSN SINGLE_DSN
Prints "PSYCOPG2 OK <checks>" and exits 0, or prints the first difference and exits 1."""
import sys

import psycopg2

CASES = [
    ("SELECT event_type, count, sum FROM video_totals WHERE video_id = %s ORDER BY 1", ("vid-37_x1",)),
    ("SELECT bucket_start, count FROM video_stats_hour WHERE video_id = %s AND event_type = %s "
     "ORDER BY bucket_start", ("vid-74_x2", "view")),
    ("SELECT event_type, count(*), sum(count), avg(count), min(count), max(bucket_start) "
     "FROM video_stats_hour WHERE count > %s GROUP BY event_type HAVING sum(count) > %s "
     "ORDER BY event_type", (10, 1000)),
    ("SELECT v.video_id, c.name, t.count FROM videos v JOIN video_totals t ON t.video_id = v.video_id "
     "LEFT JOIN channels c ON c.channel_id = v.channel_id WHERE t.event_type = %s "
     "ORDER BY t.count DESC, v.video_id LIMIT 10", ("view",)),
    ("SELECT video_id, title FROM videos WHERE video_id IN %s ORDER BY 1",
     (("vid-37_x1", "vid-74_x2", "vid-10_x3"),)),
]


def main():
    proxy = psycopg2.connect(sys.argv[1])
    single = psycopg2.connect(sys.argv[2])
    proxy.autocommit = True
    single.autocommit = True
    checks = 0
    for sql, params in CASES:
        results = []
        for conn in (proxy, single):
            with conn.cursor() as cur:
                cur.execute(sql, params)
                results.append(([(d.name, d.type_code) for d in cur.description], cur.fetchall()))
        checks += 1
        if results[0] != results[1]:
            print("PSYCOPG2 FAIL: %s\n got:  %r\n want: %r" % (sql, results[0], results[1]))
            return 1
        if not results[1][1]:
            print("PSYCOPG2 FAIL: %s returned no rows on the single database" % sql)
            return 1
    with proxy.cursor() as cur:
        cur.execute("SELECT count(*) FROM videos WHERE video_id = %s", ("x' OR '1'='1",))
        checks += 1
        if cur.fetchone()[0] != 0:
            print("PSYCOPG2 FAIL: a quote in a parameter matched rows")
            return 1
        try:
            cur.execute("DELETE FROM videos")
            print("PSYCOPG2 FAIL: DELETE did not fail")
            return 1
        except psycopg2.Error as e:
            checks += 1
            if e.pgcode != "25006":
                print("PSYCOPG2 FAIL: DELETE gave SQLSTATE %s" % e.pgcode)
                return 1
        cur.execute("SELECT count(*) FROM videos")
        checks += 1
        if cur.fetchone()[0] != 80:
            print("PSYCOPG2 FAIL: count(*) of videos is not 80")
            return 1
    # Without autocommit psycopg2 wraps statements in BEGIN ... COMMIT.
    proxy.autocommit = False
    with proxy.cursor() as cur:
        cur.execute("SELECT count(*) FROM channels")
        checks += 1
        if cur.fetchone()[0] != 12:
            print("PSYCOPG2 FAIL: count(*) of channels is not 12")
            return 1
    proxy.commit()
    print("PSYCOPG2 OK %d" % checks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
