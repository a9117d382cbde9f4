//! Endpoints, tiers and the whole-world compile that `render` and standalone mode run.
use super::*;

#[test]
fn endpoints_report_missing_fallbacks_and_model_conflicts() {
    let older = mk_endpoint("speech", "a").model("whisper-1").created(t0()).build();
    let newer = mk_endpoint("other", "b").model("whisper-1").created(t0() + hours(1)).build();
    let with_fallback = mk_endpoint("speech", "c").fallback("missing").build();
    let all: BTreeMap<NamespacedName, InferenceEndpoint> = [&older, &newer, &with_fallback]
        .into_iter()
        .map(|e| {
            (NamespacedName::new(e.metadata.namespace.clone().unwrap(), e.metadata.name.clone().unwrap()), e.clone())
        })
        .collect();

    let a = compile_endpoint(&older, &all, 3, Ok(None), t0());
    assert_eq!(a.shard.as_ref().unwrap().model, "whisper-1");
    assert_eq!(a.status.policies, 3);
    assert_eq!(a.events, vec![]);

    let b = compile_endpoint(&newer, &all, 0, Ok(None), t0());
    assert_eq!(b.shard, None);
    let ready = b.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "ModelConflict");
    assert!(ready.message.contains("already served by InferenceEndpoint speech/a"), "{}", ready.message);
    assert_eq!(b.events.iter().map(|e| e.reason).collect::<Vec<_>>(), vec!["ModelConflict"]);

    // Endpoints pinned to disjoint node pools never meet on one agent, so they may share a model name.
    let mut pinned_a = older.clone();
    pinned_a.spec.node_selector = Some([("pool".to_string(), "a".to_string())].into_iter().collect());
    let mut pinned_b = newer.clone();
    pinned_b.spec.node_selector = Some([("pool".to_string(), "b".to_string())].into_iter().collect());
    let pinned: BTreeMap<NamespacedName, InferenceEndpoint> =
        [(NamespacedName::new("speech", "a"), pinned_a), (NamespacedName::new("other", "b"), pinned_b.clone())]
            .into_iter()
            .collect();
    assert!(compile_endpoint(&pinned_b, &pinned, 0, Ok(None), t0()).shard.is_some());

    let c = compile_endpoint(&with_fallback, &all, 0, Ok(None), t0());
    assert_eq!(c.shard.as_ref().unwrap().fallback, None, "served, without the missing fallback");
    let fb = c.status.conditions.iter().find(|c| c.type_ == FALLBACK_RESOLVED).unwrap();
    assert_eq!((fb.status.as_str(), fb.reason.as_str()), ("False", "FallbackNotFound"));
    assert!(fb.message.contains("speech/missing not found (it must be in the same namespace)"));
    assert_eq!(c.events.iter().map(|e| (e.reason, e.warning)).collect::<Vec<_>>(), vec![("FallbackNotFound", true)]);
    let mut reconciled = with_fallback.clone();
    reconciled.status = Some(c.status.clone());
    assert_eq!(compile_endpoint(&reconciled, &all, 0, Ok(None), t0() + secs(9)).status, c.status, "no churn");
}

#[test]
fn tiers_count_their_policies() {
    let status = compile_tier(&mk_tier("free"), 2, t0());
    assert_eq!(
        status,
        RateTierStatus {
            observed_generation: Some(1),
            conditions: vec![condition("Ready", true, "Accepted", "used by 2 ApiKeyPolicy(ies)", Some(1), t0())],
            policies: 2,
        }
    );
}

#[test]
fn the_whole_world_compiles_to_shards_statuses_and_one_wake_up() {
    let tiers = vec![mk_tier("free")];
    let endpoints = vec![mk_endpoint("speech", "whisper").build(), mk_endpoint("speech", "unused").build()];
    let policies = vec![mk_policy("a").rotation(24, 1).build(), mk_policy("b").tier("missing").build()];
    let world = World {
        tiers: &tiers,
        endpoints: &endpoints,
        policies: &policies,
        key_secrets: &[],
        upstream_secrets: &[],
        shards: &[],
        operator_namespace: Some(OPERATOR_NS),
        agents: &[],
        now: t0(),
    };
    let desired = compile(&world, &mut InsecureSequentialKeys::starting_at(1));
    assert_eq!(desired.tiers["free"].policies, 1);
    assert_eq!(desired.endpoints[&NamespacedName::new("speech", "whisper")].status.policies, 2);
    assert_eq!(desired.endpoints[&NamespacedName::new("speech", "unused")].status.policies, 0);
    let owners: Vec<String> = desired
        .shards
        .iter()
        .map(|s| format!("{:?} {}", s.kind(), s.owner().expect("compile writes owned shards")))
        .collect();
    assert_eq!(owners, vec!["Endpoint speech/unused", "Endpoint speech/whisper", "Policy acme/a"]);
    assert_eq!(desired.next_wake, Some(t0() + hours(24)));
    assert!(desired.policies[&NamespacedName::new("acme", "b")].key_secret.is_some());

    // Fed its own Secrets and shards back, the world compiles to the same keys without generating any.
    let secrets: Vec<&Secret> = desired.policies.values().filter_map(|o| o.key_secret.as_ref()).collect();
    let world2 = World { key_secrets: &secrets, shards: &desired.shards, ..world };
    let again = compile(&world2, &mut NoKeys);
    assert_eq!(again.shards, desired.shards);
}

#[test]
fn hand_edited_bookkeeping_is_ignored_not_trusted() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 6).build();
    c.reconcile(&mut p, t0());
    c.reconcile(&mut p, t0() + hours(24));
    // Someone points previous-key-id at another key: the pair no longer matches, so no retiring key is accepted.
    let ann = c.secret.as_mut().unwrap().metadata.annotations.as_mut().unwrap();
    ann.insert(annotations::PREVIOUS_KEY_ID.into(), "kid_ffffffffffffffff".into());
    let out = c.compile_with(&p, t0() + hours(25), &mut NoKeys);
    assert_eq!(out.shard.unwrap().keys, vec![current_entry(2, t0() + hours(24))]);
}

#[test]
fn local_manifests_without_uids_own_their_secrets_by_name() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    p.metadata.uid = None;
    c.reconcile(&mut p, t0());
    let again = c.compile_with(&p, t0() + secs(1), &mut NoKeys);
    assert_eq!(ready_of(&again.status).1, "KeysActive");
    assert_eq!(again.events, vec![]);
}

#[test]
fn an_upstream_credential_comes_from_its_labelled_secret_in_the_endpoints_namespace() {
    use infergate_crds::endpoint::UpstreamAuth;
    use k8s_openapi::ByteString;
    let mut e = mk_endpoint("speech", "whisper").0;
    let auth = |header: &str| UpstreamAuth { secret_name: "cred".into(), key: "token".into(), header: header.into() };
    e.spec.backend.upstream.as_mut().unwrap().auth = Some(auth("Authorization"));
    let secret = |ns: &str| Secret {
        metadata: ObjectMeta { name: Some("cred".into()), namespace: Some(ns.into()), ..Default::default() },
        data: Some([("token".to_string(), ByteString(b" s3cret\n".to_vec()))].into()),
        ..Default::default()
    };
    let found = crate::upstream_credential(&e, &[secret("other"), secret("speech")]).unwrap().unwrap();
    assert_eq!((found.header.as_str(), found.value.as_str()), ("authorization", "Bearer s3cret"));
    assert!(!format!("{found:?}").contains("s3cret"), "Debug output hides the value");
    e.spec.backend.upstream.as_mut().unwrap().auth = Some(auth("x-api-key"));
    let raw = crate::upstream_credential(&e, &[secret("speech")]).unwrap().unwrap();
    assert_eq!((raw.header.as_str(), raw.value.as_str()), ("x-api-key", "s3cret"));
    // Another namespace's Secret of the same name is never used.
    let missing = crate::upstream_credential(&e, &[secret("other")]).unwrap_err();
    assert!(
        missing.contains("speech/cred not found") && missing.contains("infergate.dev/upstream-credential"),
        "{missing}"
    );
    // Not ready, no shard, and the condition says why.
    let all: BTreeMap<NamespacedName, InferenceEndpoint> =
        [(NamespacedName::new("speech", "whisper"), e.clone())].into();
    let outcome = compile_endpoint(&e, &all, 0, Err(missing), t0());
    assert!(outcome.shard.is_none());
    let ready = outcome.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "UpstreamCredentialMissing"));
}

/// The incremental compile (standalone mode's reloads) answers exactly as the whole compile over a run of
/// reloads: time passing a rotation and the end of its overlap, a key revoked, a policy suspended, a tier edited,
/// an endpoint added, a policy removed. Each side is fed back its own key Secrets and shards, as standalone does.
#[test]
fn the_incremental_compile_matches_the_whole_compile_reload_after_reload() {
    struct Side {
        keys: InsecureSequentialKeys,
        secrets: BTreeMap<NamespacedName, Secret>,
        shards: Vec<Shard>,
    }
    impl Side {
        fn new() -> Self {
            Side { keys: InsecureSequentialKeys::starting_at(7), secrets: BTreeMap::new(), shards: vec![] }
        }
        fn step(&mut self, w: &Inputs, now: DateTime<Utc>, memo: Option<&mut CompileMemo>) -> Desired {
            let secrets: Vec<&Secret> = self.secrets.values().collect();
            let world = World {
                tiers: &w.tiers,
                endpoints: &w.endpoints,
                policies: &w.policies,
                key_secrets: &secrets,
                upstream_secrets: &[],
                shards: &self.shards,
                operator_namespace: None,
                agents: &[],
                now,
            };
            let desired = match memo {
                Some(m) => compile_incremental(&world, &mut self.keys, m),
                None => compile(&world, &mut self.keys),
            };
            for (p, o) in &desired.policies {
                if let Some(s) = &o.key_secret {
                    self.secrets.insert(p.clone(), s.clone());
                }
            }
            self.secrets.retain(|p, _| desired.policies.contains_key(p));
            self.shards = desired.shards.clone();
            desired
        }
    }
    struct Inputs {
        tiers: Vec<RateTier>,
        endpoints: Vec<InferenceEndpoint>,
        policies: Vec<ApiKeyPolicy>,
    }
    let mut w = Inputs {
        tiers: vec![mk_tier("free")],
        endpoints: vec![mk_endpoint("speech", "whisper").build()],
        policies: (0..6)
            .map(|i| match i {
                0 => mk_policy("p0").rotation(24, 1).build(),
                _ => mk_policy(&format!("p{i}")).build(),
            })
            .collect(),
    };
    let (mut whole, mut incremental, mut memo) = (Side::new(), Side::new(), CompileMemo::default());
    let mut now = t0();
    for step in 0..12 {
        match step {
            4 => {
                let kid = whole.step(&w, now, None).policies[&NamespacedName::new("acme", "p1")]
                    .status
                    .current_key_id
                    .clone()
                    .unwrap();
                incremental.step(&w, now, Some(&mut memo));
                w.policies[1].spec.revocations.push(Revocation {
                    key_id: kid,
                    reason: "leaked".into(),
                    requested_by: "test".into(),
                });
            }
            5 => w.policies[2].spec.suspended = true,
            6 => w.tiers[0].spec.gpu_seconds_per_minute += 1.0,
            7 => w.endpoints.push(mk_endpoint("speech", "other").build()),
            8 => {
                w.policies.pop();
            }
            _ => {}
        }
        let a = whole.step(&w, now, None);
        let b = incremental.step(&w, now, Some(&mut memo));
        assert_eq!(a.shards, b.shards, "step {step}");
        assert_eq!(a.next_wake, b.next_wake, "step {step}");
        assert_eq!(whole.secrets, incremental.secrets, "step {step}");
        let ids = |d: &Desired| d.policies.values().map(|o| o.status.current_key_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b), "step {step}");
        if step == 3 {
            assert_eq!(memo.last_compiled, 0, "a reload with nothing changed compiles nothing");
        }
        now += hours(7); // past the rotation (24 h) at step 4 and the end of its overlap after it
    }
}

/// Standalone mode keeps no status: a listed revocation's first-seen time comes from the published shard, so a
/// recompile an hour later writes the same shard (agents sharing a state file used to rewrite it, and so reload
/// each other, at every compile) and does not audit the revocation again.
#[test]
fn without_a_status_a_revocation_keeps_its_time_and_is_audited_once() {
    let tiers = vec![mk_tier("free")];
    let endpoints = vec![mk_endpoint("speech", "whisper").build()];
    let mut policies = vec![mk_policy("a").build()];
    let owner = NamespacedName::new("acme", "a");
    let compile_at = |policies: &[ApiKeyPolicy], before: &Desired, now, keys: &mut dyn KeySource| {
        let secrets: Vec<&Secret> = before.policies.values().filter_map(|o| o.key_secret.as_ref()).collect();
        let world = World {
            tiers: &tiers,
            endpoints: &endpoints,
            policies,
            key_secrets: &secrets,
            upstream_secrets: &[],
            shards: &before.shards,
            operator_namespace: None,
            agents: &[],
            now,
        };
        compile(&world, keys)
    };
    let empty = Desired {
        policies: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        tiers: BTreeMap::new(),
        shards: vec![],
        next_wake: None,
    };
    let issued = compile_at(&policies, &empty, t0(), &mut InsecureSequentialKeys::starting_at(3));
    let kid = issued.policies[&owner].status.current_key_id.clone().unwrap();
    policies[0].spec.revocations.push(Revocation { key_id: kid, reason: "leaked".into(), requested_by: "test".into() });
    let revoked = compile_at(&policies, &issued, t0() + secs(10), &mut InsecureSequentialKeys::starting_at(9));
    let audited = |d: &Desired| d.policies[&owner].audit.iter().filter(|a| a.action == "key_revoked").count();
    assert_eq!(audited(&revoked), 1);
    let settled = compile_at(&policies, &revoked, t0() + secs(20), &mut NoKeys);
    let later = compile_at(&policies, &settled, t0() + hours(1), &mut NoKeys);
    assert_eq!(later.shards, settled.shards, "the revoked entry keeps its first-seen time");
    assert_eq!(later.policies[&owner].status.revocations[0].revoked_at, t0() + secs(10));
    assert_eq!((audited(&settled), audited(&later)), (0, 0), "audited once");
}
