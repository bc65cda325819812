//! Consul 1.17's templated policies: built-in rule templates that a token or role names,
//! with their one variable (`{"TemplateName": "builtin/service", "TemplateVariables":
//! {"name": "web"}}`), in place of a policy of its own. The templates are Consul's, word for
//! word, so `/v1/acl/templated-policies` and a preview show what Consul shows.

/// One built-in template.
#[derive(Debug)]
pub struct Template {
    pub name: &'static str,
    /// The JSON schema of its variables; empty when it takes none.
    pub schema: &'static str,
    /// HCL rules, `{{.Name}}` standing for the `name` variable.
    pub template: &'static str,
}

/// The schema of the templates that take a `name`.
const NAME_SCHEMA: &str = "{\n\t\"type\": \"object\",\n\t\"properties\": {\n\t\t\"name\": { \
\"type\": \"string\", \"$ref\": \"#/definitions/min-length-one\" }\n\t},\n\t\"required\": \
[\"name\"],\n\t\"definitions\": {\n\t\t\"min-length-one\": {\n\t\t\t\t\"type\": \"string\",\n\
\t\t\t\t\"minLength\": 1\n\t\t}\n\t}\n}";

/// Consul's open-source templates (`builtin/workload-identity` is left out: its `identity`
/// rules govern resources Muster does not have), by name.
pub const TEMPLATES: [Template; 4] = [
    Template {
        name: "builtin/dns",
        schema: "",
        template: "\nnode_prefix \"\" {\n\tpolicy = \"read\"\n}\nservice_prefix \"\" {\n\tpolicy \
                   = \"read\"\n}\nquery_prefix \"\" {\n\tpolicy = \"read\"\n}",
    },
    Template {
        name: "builtin/node",
        schema: NAME_SCHEMA,
        template: "\nnode \"{{.Name}}\" {\n\tpolicy = \"write\"\n}\nservice_prefix \"\" {\n\t\
                   policy = \"read\"\n}",
    },
    Template {
        name: "builtin/nomad-server",
        schema: "",
        template: "\nacl = \"write\"\nagent_prefix \"\" {\n  policy = \"read\"\n}\nnode_prefix \
                   \"\" {\n  policy = \"read\"\n}\nservice_prefix \"\" {\n  policy = \"write\"\n}",
    },
    Template {
        name: "builtin/service",
        schema: NAME_SCHEMA,
        template: "\nservice \"{{.Name}}\" {\n\tpolicy = \"write\"\n}\nservice \
                   \"{{.Name}}-sidecar-proxy\" {\n\tpolicy = \"write\"\n}\nservice_prefix \"\" \
                   {\n\tpolicy = \"read\"\n}\nnode_prefix \"\" {\n\tpolicy = \"read\"\n}",
    },
];

pub fn template(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// Consul's rule for a service or node identity's name (`acl.IsValidServiceIdentityName`):
/// lower-case letters, digits, `-` and `_`, starting and ending with a letter or digit. As
/// the name is written into the rules' text, nothing else may pass.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_';
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && name.len() <= 256
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(inner)
}

/// The rules template `template_name` renders to with `name` (its variable), or why it
/// cannot: no such template, a required name missing, or a name not allowed.
pub fn render(template_name: &str, name: Option<&str>) -> Result<String, String> {
    let t = template(template_name)
        .ok_or_else(|| format!("acl templated policy does not exist: {template_name}"))?;
    if t.schema.is_empty() {
        return Ok(t.template.to_string());
    }
    let name = name.unwrap_or("");
    if name.is_empty() {
        return Err(format!(
            "validation error for templated policy {template_name:?}: name is required"
        ));
    }
    if !valid_name(name) {
        return Err(format!(
            "validation error for templated policy {template_name:?}: invalid name {name:?}: \
             lower-case letters, digits, '-' and '_' only"
        ));
    }
    Ok(t.template.replace("{{.Name}}", name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Access, Resource, Rules};

    #[test]
    fn every_template_renders_to_rules_that_parse() {
        for t in &TEMPLATES {
            let text = render(t.name, Some("web")).expect(t.name);
            assert!(Rules::parse(&text).is_ok(), "{}: {text}", t.name);
        }
        let svc = render("builtin/service", Some("web")).expect("renders");
        assert!(svc.contains("service \"web\" {") && svc.contains("\"web-sidecar-proxy\""));
        let rules = Rules::parse(&svc).expect("parses");
        let mut want = Rules::default();
        want.add(Resource::Service, "web", false, Access::Write);
        want.add(Resource::Service, "web-sidecar-proxy", false, Access::Write);
        want.add(Resource::Service, "", true, Access::Read);
        want.add(Resource::Node, "", true, Access::Read);
        assert_eq!(rules, want);
    }

    #[test]
    fn names_that_could_change_the_rules_are_refused() {
        assert!(render("builtin/service", None).is_err());
        assert!(render("builtin/service", Some("")).is_err());
        for bad in [
            "we\"b",
            "web\" { policy = \"write\" }",
            "Web",
            "-web",
            "web-",
            "a b",
        ] {
            assert!(render("builtin/service", Some(bad)).is_err(), "{bad}");
        }
        assert!(render("builtin/node", Some("node-1_a")).is_ok());
        assert!(render("builtin/nope", Some("web")).is_err());
        // A template without variables ignores a name.
        assert_eq!(
            render("builtin/dns", Some("\"")).ok(),
            Some(TEMPLATES[0].template.to_string())
        );
    }
}
