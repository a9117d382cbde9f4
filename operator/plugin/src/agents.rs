//! What the agents report, as plain functions: which agents run the latest gateway config (from their Leases and
//! the published shards), and a policy's usage per key (from the agents' admin `/usage`). No I/O.
//!
//! ```text
//!  shard Secrets ─▶ latest_revision ──────────┐
//!  agent Leases ─▶ operator::agent_report ────┴─▶ agent_rows ─▶ status table + summary
//!  GET /usage of each agent ─▶ UsageReport ─▶ usage_rows (policy's key ids) ─▶ usage table
//! ```
//! The latest revision is computed the way an agent computes its own (a hash over the sorted shard revisions it
//! holds), so "up to date" means "runs exactly what is published". Liveness uses the operator's bound
//! ([`infergate_compile::AGENT_STALE_AFTER_SECS`]): the plugin counts the agents the operator counts.
use chrono::{DateTime, Duration, Utc};
use infergate_compile::{AGENT_STALE_AFTER_SECS, AgentReport};
use infergate_crds::gateway::{Shard, revision_of};
use serde::{Deserialize, Serialize};

/// The whole-config revision an agent holding exactly `shards` publishes on its Lease.
pub fn latest_revision(shards: &[Shard]) -> String {
    let mut revisions: Vec<String> = shards.iter().map(Shard::revision).collect();
    revisions.sort();
    revision_of(revisions.join(",").as_bytes())
}

/// One agent in `status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    pub node: String,
    pub revision: Option<String>,
    pub up_to_date: bool,
    /// Renewed its Lease within the staleness bound; stale agents are not counted as enforcing anything.
    pub live: bool,
    pub renewed_at: Option<DateTime<Utc>>,
    /// When the agent applied the revision it runs (its Lease annotation), as the agent wrote it.
    pub applied_at: Option<String>,
}

/// The `status` summary line's numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub latest_revision: String,
    /// Live agents running the latest revision.
    pub enforcing: usize,
    pub live: usize,
    pub stale: usize,
}

impl Summary {
    pub fn line(&self) -> String {
        let mut line = format!(
            "{}/{} live agent(s) enforce the latest config (revision {})",
            self.enforcing, self.live, self.latest_revision
        );
        if self.stale > 0 {
            line.push_str(&format!(
                "; {} stale agent(s) (Lease not renewed for {}s) not counted",
                self.stale, AGENT_STALE_AFTER_SECS
            ));
        }
        line
    }
}

/// Rows by node name, and the summary. `applied_at` is each report's `config-applied-at` annotation.
pub fn agent_rows(
    reports: &[(AgentReport, Option<String>)],
    latest: &str,
    now: DateTime<Utc>,
) -> (Vec<AgentRow>, Summary) {
    let mut rows: Vec<AgentRow> = reports
        .iter()
        .map(|(report, applied_at)| AgentRow {
            node: report.node.clone(),
            revision: report.config_revision.clone(),
            up_to_date: report.config_revision.as_deref() == Some(latest),
            live: report.renewed_at.is_some_and(|t| now - t <= Duration::seconds(AGENT_STALE_AFTER_SECS)),
            renewed_at: report.renewed_at,
            applied_at: applied_at.clone(),
        })
        .collect();
    rows.sort_by(|a, b| a.node.cmp(&b.node));
    let live = rows.iter().filter(|r| r.live).count();
    let summary = Summary {
        latest_revision: latest.to_string(),
        enforcing: rows.iter().filter(|r| r.live && r.up_to_date).count(),
        live,
        stale: rows.len() - live,
    };
    (rows, summary)
}

/// An agent's `GET /usage` answer.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct UsageReport {
    #[serde(default)]
    pub revision: String,
    pub scope: UsageScope,
    #[serde(default)]
    pub keys: Vec<KeyUsage>,
}

/// `global`: the counters of a shared store (the whole fleet's usage, the same on every agent); `agent`: this
/// agent's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageScope {
    Global,
    Agent,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsage {
    pub key_id: String,
    pub gpu_seconds: f64,
    #[serde(default)]
    pub agent_gpu_seconds: f64,
    #[serde(default)]
    pub open_streams: u64,
}

/// One key in `usage`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    pub key_id: String,
    pub state: String,
    pub gpu_seconds: f64,
    pub open_streams: u64,
}

/// The policy's keys (`(key id, state)`, in order) with their usage over every agent that answered. GPU-seconds
/// are summed over agents that count their own; with a shared store every agent reports the same fleet-wide
/// total, so the first global answer is taken instead of summing copies. Open streams are each agent's own and
/// always summed. Keys of other policies are left out.
pub fn usage_rows(keys: &[(String, String)], reports: &[UsageReport]) -> (UsageScope, Vec<UsageRow>) {
    let global = reports.iter().find(|r| r.scope == UsageScope::Global);
    let scope = if global.is_some() { UsageScope::Global } else { UsageScope::Agent };
    let rows = keys
        .iter()
        .map(|(key_id, state)| {
            let of = |r: &UsageReport| r.keys.iter().filter(|k| &k.key_id == key_id).cloned().collect::<Vec<_>>();
            // A fold from +0.0: `sum()` of no f64 is -0.0, which would print as "-0.000".
            let gpu_seconds = match global {
                Some(g) => of(g).iter().fold(0.0, |total, k| total + k.gpu_seconds),
                None => reports.iter().flat_map(of).fold(0.0, |total, k| total + k.gpu_seconds),
            };
            let open_streams = reports.iter().flat_map(of).map(|k| k.open_streams).sum();
            UsageRow { key_id: key_id.clone(), state: state.clone(), gpu_seconds, open_streams }
        })
        .collect();
    (scope, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn agent(node: &str, revision: Option<&str>, renewed: Option<i64>) -> (AgentReport, Option<String>) {
        let report = AgentReport {
            node: node.into(),
            config_revision: revision.map(Into::into),
            renewed_at: renewed.map(t),
            ..AgentReport::default()
        };
        (report, renewed.map(|s| t(s).to_rfc3339()))
    }

    #[test]
    fn the_latest_revision_is_what_an_agent_with_no_shards_reports_for_nothing_published() {
        // The agent's empty snapshot hashes the empty list: an agent that holds nothing is up to date with nothing.
        assert_eq!(latest_revision(&[]), revision_of(b""));
    }

    #[test]
    fn live_agents_on_the_latest_revision_enforce_it_and_stale_ones_are_not_counted() {
        let reports = [
            agent("node-b", Some("r2"), Some(-5)),
            agent("node-a", Some("r2"), Some(-1)),
            agent("node-c", Some("r1"), Some(-10)),
            agent("node-d", Some("r2"), Some(-AGENT_STALE_AFTER_SECS - 1)),
            agent("node-e", None, None),
        ];
        let (rows, summary) = agent_rows(&reports, "r2", t(0));
        let shown: Vec<(&str, bool, bool)> = rows.iter().map(|r| (r.node.as_str(), r.up_to_date, r.live)).collect();
        assert_eq!(
            shown,
            [
                ("node-a", true, true),
                ("node-b", true, true),
                ("node-c", false, true),
                ("node-d", true, false),
                ("node-e", false, false)
            ]
        );
        assert_eq!(summary, Summary { latest_revision: "r2".into(), enforcing: 2, live: 3, stale: 2 });
        assert_eq!(
            summary.line(),
            "2/3 live agent(s) enforce the latest config (revision r2); 2 stale agent(s) (Lease not renewed for 120s) not counted"
        );
    }

    #[test]
    fn the_summary_names_no_stale_agents_when_there_are_none() {
        let (_, summary) = agent_rows(&[agent("n", Some("r"), Some(0))], "r", t(0));
        assert_eq!(summary.line(), "1/1 live agent(s) enforce the latest config (revision r)");
    }

    fn report(scope: UsageScope, keys: &[(&str, f64, u64)]) -> UsageReport {
        UsageReport {
            revision: "r".into(),
            scope,
            keys: keys
                .iter()
                .map(|(id, gpu, streams)| KeyUsage {
                    key_id: id.to_string(),
                    gpu_seconds: *gpu,
                    agent_gpu_seconds: 0.0,
                    open_streams: *streams,
                })
                .collect(),
        }
    }

    fn keys() -> Vec<(String, String)> {
        vec![("kid_a".into(), "active".into()), ("kid_b".into(), "retiring".into())]
    }

    #[test]
    fn agent_scoped_usage_is_summed_over_agents_and_filtered_to_the_policys_keys() {
        let reports = [
            report(UsageScope::Agent, &[("kid_a", 1.5, 1), ("kid_other", 9.0, 3)]),
            report(UsageScope::Agent, &[("kid_a", 2.0, 0), ("kid_b", 0.25, 2)]),
        ];
        let (scope, rows) = usage_rows(&keys(), &reports);
        assert_eq!(scope, UsageScope::Agent);
        assert_eq!(
            rows,
            [
                UsageRow { key_id: "kid_a".into(), state: "active".into(), gpu_seconds: 3.5, open_streams: 1 },
                UsageRow { key_id: "kid_b".into(), state: "retiring".into(), gpu_seconds: 0.25, open_streams: 2 },
            ]
        );
    }

    #[test]
    fn global_usage_is_taken_once_and_streams_still_summed() {
        let reports =
            [report(UsageScope::Global, &[("kid_a", 10.0, 1)]), report(UsageScope::Global, &[("kid_a", 10.0, 2)])];
        let (scope, rows) = usage_rows(&keys(), &reports);
        assert_eq!(scope, UsageScope::Global);
        assert_eq!((rows[0].gpu_seconds, rows[0].open_streams), (10.0, 3));
        assert_eq!((rows[1].gpu_seconds, rows[1].open_streams), (0.0, 0), "a key without usage shows zero");
        assert!(rows[1].gpu_seconds.is_sign_positive(), "zero, not -0.000");
        let (_, none) = usage_rows(&keys(), &[]);
        assert!(none.iter().all(|r| r.gpu_seconds == 0.0 && r.gpu_seconds.is_sign_positive()));
    }

    #[test]
    fn usage_answers_parse_as_the_agent_writes_them() {
        let json = r#"{"revision":"abc","scope":"global","keys":[{"keyId":"kid_a","gpuSeconds":1.25,"agentGpuSeconds":0.5,"openStreams":2}]}"#;
        let parsed: UsageReport = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.scope, UsageScope::Global);
        assert_eq!(
            parsed.keys,
            [KeyUsage { key_id: "kid_a".into(), gpu_seconds: 1.25, agent_gpu_seconds: 0.5, open_streams: 2 }]
        );
    }
}
