//! Table tests: templates rendered against recorded Consul replies, each expected output
//! the one Go's text/template with consul-template's functions gives on the same data.

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;

/// A brain holding recorded replies: `(dep, http status, JSON body)`.
fn brain(replies: &[(Dep, u16, serde_json::Value)]) -> Arc<Mutex<Brain>> {
    let mut b = Brain::default();
    for (dep, status, body) in replies {
        let bytes = serde_json::to_vec(body).expect("json");
        b.record(dep, 10, dep.decode(*status, &bytes));
    }
    Arc::new(Mutex::new(b))
}

fn kv(key: &str, value: &str) -> serde_json::Value {
    use base64::Engine as _;
    json!({"Key": key, "Value": base64::engine::general_purpose::STANDARD.encode(value),
           "CreateIndex": 1, "ModifyIndex": 2, "LockIndex": 0, "Flags": 0})
}

fn instance(
    node: &str,
    addr: &str,
    id: &str,
    port: u16,
    tags: &[&str],
    status: &str,
) -> serde_json::Value {
    json!({"Node": {"Node": node, "Address": addr, "Datacenter": "dc1"},
           "Service": {"ID": id, "Service": "redis", "Tags": tags, "Port": port, "Address": ""},
           "Checks": [{"CheckID": "serfHealth", "Status": status}]})
}

fn recorded() -> Arc<Mutex<Brain>> {
    brain(&[
        (
            Dep::service(&["redis".into()]).expect("dep"),
            200,
            json!([
                instance("n2", "10.0.0.2", "redis-2", 6380, &["replica"], "passing"),
                instance(
                    "n1",
                    "10.0.0.1",
                    "redis-1",
                    6379,
                    &["master", "v7"],
                    "passing"
                ),
            ]),
        ),
        (
            Dep::service(&["empty".into()]).expect("dep"),
            200,
            json!([]),
        ),
        (
            Dep::kv_list("app"),
            200,
            json!([
                kv("app/", ""),
                kv("app/db/host", "db1"),
                kv("app/db/port", "5432"),
                kv("app/name", "shop"),
            ]),
        ),
        (
            Dep::kv_get("conf"),
            200,
            json!([kv("conf", r#"{"b":[1,2.5],"a":{"x":"<y>"}}"#)]),
        ),
        (Dep::kv_get("absent"), 404, json!(null)),
    ])
}

fn render(src: &str) -> Outcome {
    render_with(src, &Options::default())
}

fn render_with(src: &str, opts: &Options) -> Outcome {
    match Engine::new("t.ctmpl", src, opts, recorded()) {
        Ok(e) => e.render().outcome,
        Err(e) => Outcome::Error(e),
    }
}

fn ok(s: &str) -> Outcome {
    Outcome::Rendered(s.into())
}

#[test]
fn go_compatible_output() {
    let table: &[(&str, &str)] = &[
        // range/else on an empty service
        ("{{range service \"empty\"}}{{.Address}}{{else}}none{{end}}", "none"),
        // range over instances: sorted by node, then ID
        (
            "{{range service \"redis\"}}{{.Node}} {{.Address}}:{{.Port}}\n{{end}}",
            "n1 10.0.0.1:6379\nn2 10.0.0.2:6380\n",
        ),
        // whitespace trimming
        ("a  {{- \"b\" -}}  \n c", "abc"),
        ("{{range $i, $s := service \"redis\" -}}\n  {{$i}}={{$s.ID}}\n{{end -}}", "0=redis-1\n1=redis-2\n"),
        // byTag grouping (map keys sorted)
        (
            "{{range $tag, $s := service \"redis\" | byTag}}{{$tag}}:{{range $s}}{{.ID}} {{end}}\n{{end}}",
            "master:redis-1 \nreplica:redis-2 \nv7:redis-1 \n",
        ),
        // tree of nested keys: folders dropped, keys relative to the prefix
        (
            "{{range tree \"app\"}}{{.Key}}={{.Value}};{{end}}",
            "db/host=db1;db/port=5432;name=shop;",
        ),
        ("{{range ls \"app\"}}{{.Key}};{{end}}", "name;"),
        (
            "{{range $k, $v := tree \"app\" | byKey}}{{$k}}[{{range $v}}{{.Key}} {{end}}]{{end}}",
            "db[host port ]",
        ),
        ("{{tree \"app\" | explode | toJSON}}", r#"{"db":{"host":"db1","port":"5432"},"name":"shop"}"#),
        // parseJSON of a KV value; numbers are float64 as in Go
        (
            "{{with $c := key \"conf\" | parseJSON}}{{$c.a.x}} {{index $c.b 1}} {{len $c.b}}{{end}}",
            "<y> 2.5 2",
        ),
        ("{{key \"conf\" | parseJSON | toJSON}}", r#"{"a":{"x":"\u003cy\u003e"},"b":[1,2.5]}"#),
        // variables, pipelines, if/else if, comparisons
        (
            "{{$n := len (service \"redis\")}}{{if eq $n 0}}zero{{else if lt $n 2}}one{{else}}many{{end}}",
            "many",
        ),
        ("{{with service \"empty\"}}x{{else}}no{{end}}", "no"),
        ("{{keyOrDefault \"absent\" \"dflt\"}} {{keyExists \"absent\"}} {{keyExists \"conf\"}}", "dflt false true"),
        ("{{\"a,b\" | split \",\" | join \"-\"}} {{\"Hi\" | toUpper}} {{10 | subtract 3}}", "a-b HI 7"),
        ("{{printf \"%05d|%-4s|%v\" 42 \"x\" true}}", "00042|x   |true"),
        ("{{\"a.b\" | replaceAll \".\" \"_\"}} {{\"v12\" | regexReplaceAll \"[0-9]+\" \"N\"}} {{regexMatch \"^v\" \"v1\"}}", "a_b vN true"),
        ("{{\"x\" | base64Encode}} {{\"eA==\" | base64Decode}} {{\"abc\" | sha256Hex | printf \"%.8s\"}}", "eA== x ba7816bf"),
        ("{{$l := service \"redis\" | byTag}}{{\"master\" | in (index $l \"master\" | len | printf \"%d\")}}", "false"),
        ("{{$t := (index (service \"redis\") 0).Tags}}{{$t | contains \"master\"}} {{$t | containsAll (split \",\" \"master,v7\")}} {{$t | containsNone (split \",\" \"replica\")}}", "true true true"),
    ];
    for (src, want) in table {
        assert_eq!(render(src), ok(want), "template {src:?}");
    }
}

#[test]
fn custom_delimiters() {
    let opts = Options {
        left_delimiter: Some("[[".into()),
        right_delimiter: Some("]]".into()),
        ..Options::default()
    };
    assert_eq!(
        render_with(
            "{{ literal }} [[- range service \"redis\" ]] [[.ID]][[end]]",
            &opts
        ),
        ok("{{ literal }} redis-1 redis-2")
    );
}

#[test]
fn errors_name_the_template_line_and_column() {
    let Outcome::Error(e) = render("line one\n  {{ if }}x{{ end }}\n") else {
        panic!("expected a parse error");
    };
    assert!(e.starts_with("template: t.ctmpl:2:"), "{e}");
    let o = render("ok\n{{ range service \"redis\" }}\n");
    let Outcome::Error(e) = o else {
        panic!("expected a parse error, got {o:?}");
    };
    assert!(
        e.starts_with("template: t.ctmpl:2:1: unexpected EOF"),
        "{e}"
    );
    let Outcome::Error(e) = render("{{ nosuchfunc 1 }}") else {
        panic!("expected an error");
    };
    assert!(e.contains("t.ctmpl:1:") && e.contains("nosuchfunc"), "{e}");
}

#[test]
fn execution_errors_are_placed() {
    let Outcome::Error(e) = render("a\n  b {{ key \"conf\" | parseInt }}\n") else {
        panic!("expected an execution error");
    };
    assert_eq!(
        e,
        "template: t.ctmpl:2:21: executing \"t.ctmpl\" at <parseInt>: error calling parseInt: \
         parseInt: strconv.ParseInt: parsing \"{\\\"b\\\":[1,2.5],\\\"a\\\":{\\\"x\\\":\\\"<y>\\\"}}\": invalid syntax"
    );
}

#[test]
fn missing_data_never_renders() {
    // A query nobody answered yet: waiting, even though the template would render "".
    assert!(matches!(render("{{key \"never\"}}"), Outcome::Waiting(_)));
    // A key that does not exist blocks `key`, as consul-template's blocking query does.
    assert!(matches!(render("{{key \"absent\"}}"), Outcome::Waiting(_)));
    // safeTree refuses an empty prefix; tree renders it.
    let b = brain(&[(Dep::kv_list("none"), 404, json!(null))]);
    let e = Engine::new(
        "t",
        "{{range safeTree \"none\"}}x{{end}}",
        &Options::default(),
        b.clone(),
    )
    .expect("parse");
    assert!(matches!(e.render().outcome, Outcome::Waiting(_)));
    let e = Engine::new(
        "t",
        "[{{range tree \"none\"}}x{{end}}]",
        &Options::default(),
        b,
    )
    .expect("parse");
    assert_eq!(e.render().outcome, ok("[]"));
}

#[test]
fn instance_guards() {
    let Outcome::Short(why) = render("{{range service \"redis\" | minimum 3}}{{.ID}}{{end}}")
    else {
        panic!("expected the guard to hold");
    };
    assert!(
        why[0].contains("redis") && why[0].contains("minimum 3"),
        "{why:?}"
    );
    assert_eq!(
        render("{{range service \"redis\" | minimum 2}}{{.ID}} {{end}}{{minimum 4 7}}"),
        ok("redis-1 redis-2 4")
    );
    let opts = Options {
        min_instances: 1,
        ..Options::default()
    };
    assert!(matches!(
        render_with("{{range service \"empty\"}}x{{end}}", &opts),
        Outcome::Short(_)
    ));
}

#[test]
fn denied_reads_fail_with_the_reason() {
    let b = brain(&[(Dep::kv_get("secret"), 403, json!("Permission denied"))]);
    let e = Engine::new("t", "{{key \"secret\"}}", &Options::default(), b).expect("parse");
    let Outcome::Failed(why) = e.render().outcome else {
        panic!("expected a failure");
    };
    assert!(
        why[0].contains("403") && why[0].contains("Permission denied"),
        "{why:?}"
    );
}
