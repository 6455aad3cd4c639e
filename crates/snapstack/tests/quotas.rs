//! Quotas against the real `snapstack serve`: Nova's os-quota-sets,
//! os-quota-class-sets and /limits, Cinder's, their enforcement (403 for
//! Nova, 413 for Cinder), a race for the last core, and the openstack CLI
//! (`quota show`, `quota set`, `quota show --default`, `limits show`).

mod common;

use std::sync::{Arc, Barrier};

use common::{ok, Client, Server};
use serde_json::{json, Value};

fn set_quota(admin: &Client, project: &str, body: Value) {
    admin
        .request("PUT", &format!("/compute/v2.1/os-quota-sets/{project}"))
        .send_json(json!({ "quota_set": body }))
        .unwrap();
}

/// The test guest image, public so that every project can boot it.
fn public_guest(server: &Server) -> String {
    let image = server.add_guest_image_and_flavor();
    server
        .admin()
        .patch(
            &format!("/image/v2/images/{image}"),
            "application/openstack-images-v2.1-json-patch",
            json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
        )
        .expect_status(200);
    image
}

fn boot(client: &Client, image: &str, name: &str) -> common::Reply {
    client.post(
        "/compute/v2.1/servers",
        json!({"server": {"name": name, "imageRef": image, "flavorRef": "tiny", "networks": "none"}}),
    )
}

// ---- Nova ------------------------------------------------------------------

#[test]
fn compute_quota_show_when_nothing_set_then_nova_defaults_and_keys_by_microversion() {
    let server = Server::start();
    let member = server.user_with_role("q1", "member");
    let pid = member.project_id();

    let base = member.get(&format!("/compute/v2.1/os-quota-sets/{pid}"));
    let latest = member.get_with(
        &format!("/compute/v2.1/os-quota-sets/{pid}"),
        "OpenStack-API-Version",
        "compute 2.79",
    );

    let base = base.expect_status(200).body["quota_set"].clone();
    assert_eq!(base["id"], json!(pid));
    assert_eq!(base["instances"], json!(10));
    assert_eq!(base["cores"], json!(20));
    assert_eq!(base["ram"], json!(51200));
    assert_eq!(base["metadata_items"], json!(128));
    assert_eq!(base["floating_ips"], json!(-1));
    assert_eq!(base["injected_files"], json!(5));
    let latest = latest.expect_status(200).body["quota_set"].clone();
    assert!(latest.get("floating_ips").is_none(), "{latest}");
    assert!(latest.get("injected_files").is_none(), "{latest}");
    assert_eq!(latest["server_group_members"], json!(10));
}

#[test]
fn compute_quota_update_when_admin_then_shown_and_when_member_then_403() {
    let server = Server::start();
    let admin = server.admin();
    let member = server.user_with_role("q2", "member");
    let pid = member.project_id();

    let by_member = common::reply(
        member
            .request("PUT", &format!("/compute/v2.1/os-quota-sets/{pid}"))
            .send_json(json!({"quota_set": {"cores": 99}})),
    );
    let by_admin = common::reply(
        admin
            .request("PUT", &format!("/compute/v2.1/os-quota-sets/{pid}"))
            .send_json(json!({"quota_set": {"cores": 4, "instances": 3}})),
    );
    let shown = member.get(&format!("/compute/v2.1/os-quota-sets/{pid}"));
    let other = member.get(&format!(
        "/compute/v2.1/os-quota-sets/{}",
        admin.project_id()
    ));
    let bad = common::reply(
        admin
            .request("PUT", &format!("/compute/v2.1/os-quota-sets/{pid}"))
            .send_json(json!({"quota_set": {"cores": -5}})),
    );
    let deleted = admin.delete(&format!("/compute/v2.1/os-quota-sets/{pid}"));
    let after_delete = member.get(&format!("/compute/v2.1/os-quota-sets/{pid}"));

    assert_eq!(by_member.status, 403);
    let by_admin = by_admin.expect_status(200);
    assert_eq!(by_admin.body["quota_set"]["cores"], json!(4));
    assert!(by_admin.body["quota_set"].get("id").is_none());
    let shown = shown.expect_status(200);
    assert_eq!(shown.body["quota_set"]["cores"], json!(4));
    assert_eq!(shown.body["quota_set"]["instances"], json!(3));
    assert_eq!(other.status, 403);
    assert_eq!(bad.status, 400);
    assert_eq!(deleted.status, 202);
    assert_eq!(after_delete.body["quota_set"]["cores"], json!(20));
}

#[test]
fn quota_class_when_default_updated_then_projects_and_defaults_follow() {
    let server = Server::start();
    let admin = server.admin();
    let pid = admin.project_id();

    let updated = common::reply(
        admin
            .request("PUT", "/compute/v2.1/os-quota-class-sets/default")
            .send_json(json!({"quota_class_set": {"ram": 1024}})),
    );
    let class = admin.get("/compute/v2.1/os-quota-class-sets/default");
    let defaults = admin.get(&format!("/compute/v2.1/os-quota-sets/{pid}/defaults"));
    let project = admin.get(&format!("/compute/v2.1/os-quota-sets/{pid}"));

    assert_eq!(
        updated.expect_status(200).body["quota_class_set"]["ram"],
        json!(1024)
    );
    let class = class.expect_status(200);
    assert_eq!(class.body["quota_class_set"]["id"], json!("default"));
    assert_eq!(class.body["quota_class_set"]["ram"], json!(1024));
    assert_eq!(defaults.body["quota_set"]["ram"], json!(1024));
    assert_eq!(project.body["quota_set"]["ram"], json!(1024));
}

#[test]
fn boot_when_cores_over_quota_then_403_and_detail_and_limits_count_usage() {
    let server = Server::start();
    let image = public_guest(&server);
    let admin = server.admin();
    let member = server.user_with_role("q3", "member");
    let pid = member.project_id();
    set_quota(&admin, &pid, json!({"cores": 1}));

    let first = boot(&member, &image, "one");
    let second = boot(&member, &image, "two");
    let detail = member.get(&format!("/compute/v2.1/os-quota-sets/{pid}/detail"));
    let limits = member.get("/compute/v2.1/limits");

    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(second.status, 403, "{}", second.body);
    let message = second.body["forbidden"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Quota exceeded for cores: Requested 1, but already used 1 of 1 cores"),
        "{message}"
    );
    let cores = &detail.expect_status(200).body["quota_set"]["cores"];
    assert_eq!(cores, &json!({"in_use": 1, "limit": 1, "reserved": 0}));
    let abs = &limits.expect_status(200).body["limits"]["absolute"];
    assert_eq!(abs["maxTotalCores"], json!(1));
    assert_eq!(abs["totalCoresUsed"], json!(1));
    assert_eq!(abs["totalInstancesUsed"], json!(1));
    assert_eq!(abs["totalRAMUsed"], json!(256));
}

#[test]
fn boot_when_two_race_for_the_last_core_then_one_202_one_403() {
    let server = Server::start();
    let image = public_guest(&server);
    let member = server.user_with_role("q4", "member");
    set_quota(&server.admin(), &member.project_id(), json!({"cores": 1}));
    let barrier = Arc::new(Barrier::new(2));

    let racers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let (member, image, barrier) = (member.clone(), image.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                boot(&member, &image, name).status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort();

    assert_eq!(statuses, vec![202, 403]);
}

#[test]
fn boot_when_metadata_items_over_quota_then_403() {
    let server = Server::start();
    let image = public_guest(&server);
    let member = server.user_with_role("q5", "member");
    set_quota(
        &server.admin(),
        &member.project_id(),
        json!({"metadata_items": 1}),
    );

    let r = member.post(
        "/compute/v2.1/servers",
        json!({"server": {"name": "m", "imageRef": image, "flavorRef": "tiny", "networks": "none",
                          "metadata": {"a": "1", "b": "2"}}}),
    );

    assert_eq!(r.status, 403, "{}", r.body);
}

// ---- Cinder ----------------------------------------------------------------

#[test]
fn volume_quota_when_volumes_limit_reached_then_413_and_usage_shown() {
    let server = Server::start();
    let admin = server.admin();
    let member = server.user_with_role("q6", "member");
    let pid = member.project_id();
    let base = format!("/volume/v3/{pid}");
    admin
        .request(
            "PUT",
            &format!("/volume/v3/{}/os-quota-sets/{pid}", admin.project_id()),
        )
        .send_json(json!({"quota_set": {"volumes": 1, "gigabytes": 5}}))
        .unwrap();

    let first = member.post(&format!("{base}/volumes"), json!({"volume": {"size": 1}}));
    let second = member.post(&format!("{base}/volumes"), json!({"volume": {"size": 1}}));
    let usage = member.get(&format!("{base}/os-quota-sets/{pid}?usage=true"));
    let limits = member.get(&format!("{base}/limits"));
    let defaults = member.get(&format!("{base}/os-quota-sets/{pid}/defaults"));

    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(second.status, 413, "{}", second.body);
    assert!(second.body["overLimit"]["message"]
        .as_str()
        .unwrap()
        .contains("Maximum number of volumes allowed (1) exceeded"));
    let q = &usage.expect_status(200).body["quota_set"];
    assert_eq!(q["volumes"]["limit"], json!(1));
    assert_eq!(q["volumes"]["in_use"], json!(1));
    assert_eq!(q["gigabytes"]["in_use"], json!(1));
    let abs = &limits.expect_status(200).body["limits"]["absolute"];
    assert_eq!(abs["maxTotalVolumes"], json!(1));
    assert_eq!(abs["totalVolumesUsed"], json!(1));
    assert_eq!(abs["maxTotalVolumeGigabytes"], json!(5));
    assert_eq!(defaults.body["quota_set"]["volumes"], json!(10));
}

#[test]
fn volume_quota_when_size_over_gigabytes_then_413() {
    let server = Server::start();
    let admin = server.admin();
    let pid = admin.project_id();
    let base = format!("/volume/v3/{pid}");
    admin
        .request("PUT", &format!("{base}/os-quota-sets/{pid}"))
        .send_json(json!({"quota_set": {"gigabytes": 2, "per_volume_gigabytes": 5}}))
        .unwrap();

    let too_big = admin.post(&format!("{base}/volumes"), json!({"volume": {"size": 3}}));
    let over_per_volume = admin.post(&format!("{base}/volumes"), json!({"volume": {"size": 6}}));

    assert_eq!(too_big.status, 413, "{}", too_big.body);
    assert!(too_big.body["overLimit"]["message"]
        .as_str()
        .unwrap()
        .contains("exceeds allowed gigabytes quota"));
    assert_eq!(over_per_volume.status, 413, "{}", over_per_volume.body);
}

// ---- CLI -------------------------------------------------------------------

#[test]
fn cli_quota_set_show_default_and_limits_when_used_then_match_api() {
    let server = Server::start();
    server.user_with_role("q7", "member");

    ok(server.openstack(&[
        "quota",
        "set",
        "--cores",
        "4",
        "--volumes",
        "7",
        "q7-project",
    ]));
    let shown = ok(server.openstack(&["quota", "show", "q7-project", "-f", "json"]));
    let default = ok(server.openstack(&["quota", "show", "--default", "-f", "json"]));
    let limits = ok(server.openstack(&["limits", "show", "--absolute", "-f", "json"]));

    let shown: Value = serde_json::from_str(&shown).unwrap();
    let find = |v: &Value, name: &str| -> Value {
        v.as_array()
            .and_then(|rows| {
                rows.iter()
                    .find(|r| r["Resource"] == json!(name))
                    .map(|r| r["Limit"].clone())
            })
            .unwrap_or_else(|| v[name].clone())
    };
    assert_eq!(find(&shown, "cores"), json!(4), "{shown}");
    assert_eq!(find(&shown, "volumes"), json!(7), "{shown}");
    let default: Value = serde_json::from_str(&default).unwrap();
    assert_eq!(find(&default, "cores"), json!(20), "{default}");
    let limits: Value = serde_json::from_str(&limits).unwrap();
    let names: Vec<&str> = limits
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["Name"].as_str())
        .collect();
    assert!(names.contains(&"max_total_cores"), "{limits}");
    assert!(names.contains(&"max_total_volumes"), "{limits}");
}

#[test]
fn volume_extend_when_over_gigabytes_then_413() {
    let server = Server::start();
    let admin = server.admin();
    let pid = admin.project_id();
    let base = format!("/volume/v3/{pid}");
    admin
        .request("PUT", &format!("{base}/os-quota-sets/{pid}"))
        .send_json(json!({"quota_set": {"gigabytes": 2}}))
        .unwrap();
    let created = admin.post(&format!("{base}/volumes"), json!({"volume": {"size": 1}}));
    let id = created.expect_status(202).body["volume"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..100 {
        let v = admin.get(&format!("{base}/volumes/{id}"));
        if v.body["volume"]["status"] == json!("available") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let r = admin.post(
        &format!("{base}/volumes/{id}/action"),
        json!({"os-extend": {"new_size": 3}}),
    );

    assert_eq!(r.status, 413, "{}", r.body);
}

// ---- Glance caps -----------------------------------------------------------

#[test]
fn image_when_more_than_128_tags_or_properties_then_413() {
    let server = Server::start();
    let admin = server.admin();
    let tags: Vec<String> = (0..129).map(|i| format!("t{i}")).collect();
    let mut props = serde_json::Map::new();
    for i in 0..129 {
        props.insert(format!("p{i}"), json!("v"));
    }
    props.insert("name".into(), json!("many"));

    let too_many_tags = admin.post("/image/v2/images", json!({"name": "tags", "tags": tags}));
    let too_many_props = admin.post("/image/v2/images", Value::Object(props));

    assert_eq!(too_many_tags.status, 413, "{}", too_many_tags.body);
    assert_eq!(too_many_props.status, 413, "{}", too_many_props.body);
}

#[test]
fn image_when_count_or_size_total_reached_then_413() {
    let server = Server::start_with(&["--image-count-total", "1", "--image-size-total", "1"]);
    let member = server.user_with_role("q8", "member");

    let (_, too_big) = member.upload_image("first", "raw", &vec![1u8; 2 << 20]);
    let second = member.post(
        "/image/v2/images",
        json!({"name": "second", "disk_format": "raw", "container_format": "bare"}),
    );

    assert_eq!(too_big.status, 413, "{}", too_big.body);
    assert_eq!(second.status, 413, "{}", second.body);
    assert!(
        second.message().contains("image_count_total"),
        "{}",
        second.body
    );
}

#[test]
fn cli_quota_show_and_limits_when_member_then_own_project_shown() {
    let server = Server::start();
    server.user_with_role("q9", "member");

    let shown = server.openstack_as(
        "q9",
        "pw-q9",
        "q9-project",
        &["quota", "show", "-f", "json"],
    );
    let limits = server.openstack_as(
        "q9",
        "pw-q9",
        "q9-project",
        &["limits", "show", "--absolute", "-f", "json"],
    );

    let shown = ok(shown);
    assert!(shown.contains("cores"), "{shown}");
    let limits = ok(limits);
    assert!(limits.contains("max_total_cores"), "{limits}");
}

#[test]
fn volume_quota_when_creates_follow_each_other_up_to_the_limit_then_all_fit() {
    let server = Server::start();
    let admin = server.admin();
    let pid = admin.project_id();
    let base = format!("/volume/v3/{pid}");
    admin
        .request("PUT", &format!("{base}/os-quota-sets/{pid}"))
        .send_json(json!({"quota_set": {"volumes": 3}}))
        .unwrap();

    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            admin
                .post(&format!("{base}/volumes"), json!({"volume": {"size": 1}}))
                .status
        })
        .collect();

    assert_eq!(statuses, vec![202, 202, 202, 413]);
}

#[test]
fn volume_quota_delete_when_admin_then_200_without_body_and_defaults_back() {
    let server = Server::start();
    let admin = server.admin();
    let pid = server.user_with_role("q9", "member").project_id();
    let path = format!("/volume/v3/{}/os-quota-sets/{pid}", admin.project_id());
    admin
        .request("PUT", &path)
        .send_json(json!({"quota_set": {"volumes": 15}}))
        .unwrap();

    let deleted = admin.delete(&path);
    let shown = admin.get(&path);

    assert_eq!(deleted.status, 200);
    assert!(deleted.raw.is_empty(), "{:?}", deleted.raw);
    assert_eq!(
        shown.expect_status(200).body["quota_set"]["volumes"],
        json!(10)
    );
}

#[test]
fn image_upload_when_over_stage_total_then_413_queued_and_nothing_staged_and_smaller_fits() {
    let server = Server::start_with(&["--image-stage-total", "1"]);
    let member = server.user_with_role("q10", "member");

    let (big, too_big) = member.upload_image("big", "raw", &vec![1u8; 2 << 20]);
    let (_, fits) = member.upload_image("small", "raw", &vec![1u8; 512 << 10]);
    let again = member
        .upload_image("small-2", "raw", &vec![1u8; 512 << 10])
        .1;

    assert_eq!(too_big.status, 413, "{}", too_big.body);
    assert!(
        too_big.message().contains("image_stage_total"),
        "{}",
        too_big.body
    );
    assert_eq!(member.image(&big)["status"], json!("queued"));
    assert_eq!(server.staging_files(), Vec::<String>::new());
    assert_eq!(fits.status, 204, "{}", fits.body);
    assert_eq!(
        again.status, 204,
        "the first upload gave its staged bytes back"
    );
}

#[test]
fn image_upload_when_streamed_past_stage_total_then_413() {
    let server = Server::start_with(&["--image-stage-total", "1"]);
    let member = server.user_with_role("q11", "member");
    let id = member
        .create_image(json!({"name": "chunked", "disk_format": "raw", "container_format": "bare"}));

    // No Content-Length: the limit stops the stream itself.
    let r = common::reply(
        member
            .request("PUT", &format!("/image/v2/images/{id}/file"))
            .set("Content-Type", "application/octet-stream")
            .send(std::io::Cursor::new(vec![1u8; 3 << 20])),
    );

    assert_eq!(r.status, 413, "{}", r.body);
}

#[test]
fn compute_quota_update_when_below_in_use_then_400_unless_forced_by_api_and_cli() {
    let server = Server::start();
    let image = public_guest(&server);
    let admin = server.admin();
    let member = server.user_with_role("q12", "member");
    let pid = member.project_id();
    boot(&member, &image, "one").expect_status(202);
    let path = format!("/compute/v2.1/os-quota-sets/{pid}");

    let below = common::reply(
        admin
            .request("PUT", &path)
            .send_json(json!({"quota_set": {"cores": 0}})),
    );
    let cli_below = server.openstack(&["quota", "set", "--cores", "0", &pid]);
    let forced = common::reply(
        admin
            .request("PUT", &path)
            .send_json(json!({"quota_set": {"instances": 0, "force": "True"}})),
    );
    let cli_forced = server.openstack(&["quota", "set", "--force", "--cores", "0", &pid]);
    let shown = admin.get(&path);

    assert_eq!(below.status, 400, "{}", below.body);
    assert_eq!(
        below.body["badRequest"]["message"],
        json!(
            "Quota limit 0 for cores must be greater than or equal to already used and reserved 1."
        )
    );
    assert!(!cli_below.status.success());
    assert!(
        String::from_utf8_lossy(&cli_below.stderr).contains("already used and reserved 1"),
        "{}",
        String::from_utf8_lossy(&cli_below.stderr)
    );
    assert_eq!(forced.status, 200, "{}", forced.body);
    ok(cli_forced);
    let q = &shown.expect_status(200).body["quota_set"];
    assert_eq!(q["cores"], json!(0));
    assert_eq!(q["instances"], json!(0));
}
