//! What people read: kubectl's table look (upper-case headers, left-aligned columns three spaces apart, `<none>`
//! for nothing) and the cell formats shared by every command. Machines get `-o json` instead.
use chrono::{DateTime, Duration, SecondsFormat, Utc};

/// Column gap, as `kubectl get` prints.
const GAP: usize = 3;

/// An aligned text table.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), rows: Vec::new() }
    }

    /// Adds a row; a row shorter than the headers is padded with empty cells.
    pub fn row(&mut self, mut cells: Vec<String>) {
        debug_assert!(cells.len() <= self.headers.len(), "more cells than columns");
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table, one line per row after the header line, with no trailing spaces. Widths count characters, so
    /// non-ASCII reasons and names keep the columns aligned.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + GAP));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// An instant as a cell: RFC 3339 in UTC to the second, `<none>` when absent.
pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "<none>".to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// How long ago, kubectl's way: `42s`, `5m`, `3h`, `12d`; `<none>` when unknown.
pub fn age(since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(since) = since else { return "<none>".to_string() };
    let d = (now - since).max(Duration::zero());
    match d.num_seconds() {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// An optional text as a cell.
pub fn text(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("<none>").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_and_lines_carry_no_trailing_spaces() {
        let mut table = Table::new(&["KEY ID", "STATE", "ISSUED"]);
        table.row(vec!["kid_00000000000000aa".into(), "active".into(), "2026-01-02T03:04:05Z".into()]);
        table.row(vec!["kid_00000000000000bb".into(), "retiring".into()]);
        assert_eq!(
            table.render(),
            "KEY ID                 STATE      ISSUED\n\
             kid_00000000000000aa   active     2026-01-02T03:04:05Z\n\
             kid_00000000000000bb   retiring\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(Table::new(&["NODE", "REVISION"]).render(), "NODE   REVISION\n");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut table = Table::new(&["A", "B"]);
        table.row(vec!["é".into(), "x".into()]);
        table.row(vec!["ab".into(), "y".into()]);
        assert_eq!(table.render(), "A    B\né    x\nab   y\n");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ago = |s: i64| age(Some(now - Duration::seconds(s)), now);
        assert_eq!(
            [ago(5), ago(119), ago(120), ago(7199), ago(7200), ago(3 * 86400)],
            ["5s", "119s", "2m", "119m", "2h", "3d"]
        );
        assert_eq!(age(None, now), "<none>");
        assert_eq!(age(Some(now + Duration::seconds(30)), now), "0s", "a clock ahead of ours is not a negative age");
    }

    #[test]
    fn times_are_rfc3339_seconds_in_utc() {
        assert_eq!(time(DateTime::from_timestamp(1_800_000_000, 123_000_000)), "2027-01-15T08:00:00Z");
        assert_eq!(time(None), "<none>");
        assert_eq!(text(Some("")), "<none>");
    }
}
