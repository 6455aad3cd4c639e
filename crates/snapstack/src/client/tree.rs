//! The restore-point tree as text, `virsh snapshot-list --tree` style:
//!
//! ```text
//! A  disk-only  available  pause 0.0 ms  2026-11-25T22:20:01Z  <id>
//! ├── B  memory  available  pause 24.1 ms  …
//! │   └── C  internal+memory  available  pause 313.0 ms  …
//! └── D  disk-only  available  pause 0.0 ms  …  (current)
//! ```

use serde_json::Value;

/// Renders the `restore_points` list of the API (each with `id`,
/// `parent_id`, `name`, …) as a tree; roots and children by creation order.
pub fn render(points: &[Value]) -> String {
    let mut out = String::new();
    let is_root = |p: &&Value| {
        let parent = p["parent_id"].as_str();
        parent.is_none_or(|id| !points.iter().any(|q| q["id"] == id))
    };
    for root in points.iter().filter(is_root) {
        out.push_str(&line(root));
        out.push('\n');
        children(points, root, "", &mut out);
    }
    out
}

fn children(points: &[Value], parent: &Value, prefix: &str, out: &mut String) {
    let kids: Vec<&Value> = points
        .iter()
        .filter(|p| p["parent_id"] == parent["id"])
        .collect();
    for (i, kid) in kids.iter().enumerate() {
        let last = i + 1 == kids.len();
        out.push_str(prefix);
        out.push_str(if last { "└── " } else { "├── " });
        out.push_str(&line(kid));
        out.push('\n');
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        children(points, kid, &deeper, out);
    }
}

/// One point: name, kind, status, pause, time, id, and whether it is current.
pub fn line(p: &Value) -> String {
    let kind = match (p["method"].as_str(), p["memory"].as_bool()) {
        (Some("internal"), _) => "internal",
        (_, Some(true)) => "memory",
        _ => "disk-only",
    };
    let pause = p["guest_pause_ms"]
        .as_f64()
        .map_or_else(|| "pause -".to_string(), |ms| format!("pause {ms:.1} ms"));
    let mut text = format!(
        "{}  {kind}  {}  {pause}  {}  {}",
        p["name"].as_str().unwrap_or(""),
        p["status"].as_str().unwrap_or(""),
        p["created_at"].as_str().unwrap_or(""),
        p["id"].as_str().unwrap_or(""),
    );
    if p["current"] == true {
        text.push_str("  (current)");
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn point(id: &str, parent: Option<&str>, current: bool) -> Value {
        json!({"id": id, "parent_id": parent, "name": id, "method": "external",
               "memory": false, "status": "available", "guest_pause_ms": 0.0,
               "created_at": "t", "current": current})
    }

    #[test]
    fn render_when_branch_then_children_drawn_under_their_parent() {
        let points = [
            point("A", None, false),
            point("B", Some("A"), false),
            point("C", Some("B"), false),
            point("D", Some("A"), true),
        ];

        let text = render(&points);

        let names: Vec<String> = text
            .lines()
            .map(|l| l.split("  disk-only").next().unwrap().to_string())
            .collect();
        assert_eq!(names, ["A", "├── B", "│   └── C", "└── D"]);
        assert!(text.lines().last().unwrap().ends_with("(current)"));
    }
}
