// JDBC (pgjdbc, Debian's libpostgresql-jdbc-java) against the cluster proxy's analyst endpoint and
// against one PostgreSQL holding the same data: prepared statements with parameters (pinned to one
// video and cross-shard with GROUP BY/HAVING), executed past pgjdbc's prepareThreshold so the
// driver switches to named server-side statements and binary results, a fetch size (Execute with
// max_rows, PortalSuspended), errors, and a write refused as read-only. Every answer must equal the
// single database's. Run by analyst_sql_integration_test:
//   java -cp /usr/share/java/postgresql.jar AnalystJdbcCheck.java PROXY_URL SINGLE_URL
// (URLs with ?user=...&password=...)
// Prints "JDBC OK <checks>" and exits 0, or prints the first difference and exits 1.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

public class AnalystJdbcCheck {
  static int checks = 0;

  static void fail(String what) {
    System.out.println("JDBC FAIL: " + what);
    System.exit(1);
  }

  static List<String> rows(ResultSet rs) throws SQLException {
    ResultSetMetaData md = rs.getMetaData();
    List<String> out = new ArrayList<>();
    StringBuilder head = new StringBuilder("columns:");
    for (int i = 1; i <= md.getColumnCount(); i++) {
      head.append(md.getColumnName(i)).append('/').append(md.getColumnTypeName(i)).append(' ');
    }
    out.add(head.toString());
    while (rs.next()) {
      StringBuilder sb = new StringBuilder();
      for (int i = 1; i <= md.getColumnCount(); i++) sb.append(rs.getString(i)).append('|');
      out.add(sb.toString());
    }
    return out;
  }

  static List<String> run(Connection c, String sql, Object... params) throws SQLException {
    try (PreparedStatement ps = c.prepareStatement(sql)) {
      for (int i = 0; i < params.length; i++) ps.setObject(i + 1, params[i]);
      try (ResultSet rs = ps.executeQuery()) {
        return rows(rs);
      }
    }
  }

  static void same(String what, List<String> got, List<String> want) {
    checks++;
    if (!got.equals(want)) fail(what + "\n got:  " + got + "\n want: " + want);
    if (want.size() < 2) fail(what + ": the single database returned no rows; the check proves nothing");
  }

  public static void main(String[] args) throws Exception {
    try (Connection proxy = DriverManager.getConnection(args[0]);
         Connection single = DriverManager.getConnection(args[1])) {
      String pinned = "SELECT event_type, count, sum FROM video_totals WHERE video_id = ? ORDER BY 1";
      String hourly = "SELECT bucket_start, count FROM video_stats_hour WHERE video_id = ? AND event_type = ? ORDER BY bucket_start";
      String grouped = "SELECT event_type, count(*), sum(count), avg(count), min(count), max(bucket_start) FROM video_stats_hour "
          + "WHERE count > ? GROUP BY event_type HAVING sum(count) > ? ORDER BY event_type";
      String top = "SELECT v.video_id, c.name, t.count FROM videos v JOIN video_totals t ON t.video_id = v.video_id "
          + "LEFT JOIN channels c ON c.channel_id = v.channel_id WHERE t.event_type = ? ORDER BY t.count DESC, v.video_id LIMIT 10";
      // Reused PreparedStatements: after prepareThreshold (5) uses pgjdbc names the statement on
      // the server, describes it and asks for binary results.
      String[] sqls = {pinned, hourly, grouped, top};
      Object[][] params = {{"vid-37_x1"}, {"vid-74_x2", "view"}, {10, 1000L}, {"view"}};
      for (int q = 0; q < sqls.length; q++) {
        try (PreparedStatement pp = proxy.prepareStatement(sqls[q]);
             PreparedStatement ps = single.prepareStatement(sqls[q])) {
          for (int round = 0; round < 8; round++) {
            for (int i = 0; i < params[q].length; i++) {
              pp.setObject(i + 1, params[q][i]);
              ps.setObject(i + 1, params[q][i]);
            }
            List<String> got, want;
            try (ResultSet rs = pp.executeQuery()) { got = rows(rs); }
            try (ResultSet rs = ps.executeQuery()) { want = rows(rs); }
            same(sqls[q] + " (round " + round + ")", got, want);
          }
        }
      }
      // Known values, not only agreement: 80 videos, 12 channels.
      List<String> count = run(proxy, "SELECT count(*) AS n FROM videos WHERE title IS NOT NULL OR title IS NULL");
      checks++;
      if (!count.get(1).equals("80|")) fail("count(*) of videos: " + count);
      // Fetch size: a portal read in pages (Execute with max_rows, PortalSuspended).
      proxy.setAutoCommit(false);
      single.setAutoCommit(false);
      String all = "SELECT video_id, event_type, count FROM video_totals WHERE event_type = ? ORDER BY video_id";
      List<String> paged;
      try (PreparedStatement ps = proxy.prepareStatement(all)) {
        ps.setFetchSize(7);
        ps.setString(1, "like");
        try (ResultSet rs = ps.executeQuery()) { paged = rows(rs); }
      }
      same("fetch size 7", paged, run(single, all, "like"));
      if (paged.size() < 20) fail("fetch size: only " + paged.size() + " rows, want several pages");
      proxy.commit();
      single.commit();
      proxy.setAutoCommit(true);
      single.setAutoCommit(true);
      // Errors: the SQLSTATE comes through and the connection stays usable.
      try {
        run(proxy, "SELECT * FROM no_such_table WHERE video_id = ?", "x");
        fail("no_such_table did not fail");
      } catch (SQLException e) {
        checks++;
        if (!"42P01".equals(e.getSQLState())) fail("no_such_table: SQLSTATE " + e.getSQLState());
      }
      try (Statement st = proxy.createStatement()) {
        st.executeUpdate("DELETE FROM videos");
        fail("DELETE did not fail");
      } catch (SQLException e) {
        checks++;
        if (!"25006".equals(e.getSQLState())) fail("DELETE: SQLSTATE " + e.getSQLState());
      }
      same("after errors", run(proxy, pinned, "vid-10_x3"), run(single, pinned, "vid-10_x3"));
      // Parameters are never spliced into SQL text.
      checks++;
      if (run(proxy, pinned, "x' OR '1'='1").size() != 1) fail("a quote in a parameter matched rows");
    }
    System.out.println("JDBC OK " + checks);
  }
}
