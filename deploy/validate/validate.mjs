// Offline checks of the deployment files (docs/deploy.md, "Checking the files"):
//   node deploy/validate/validate.mjs [REPO_ROOT]
// - every document of every deploy/k8s/*.yaml (but kustomization.yaml)
//   against the Kubernetes API schemas (kubernetes-models), by apiVersion and
//   kind: wrong types, missing required fields and unknown kinds are errors;
// - deploy/container/Dockerfile with dockerfile-utils (instructions, flags,
//   arguments - what "docker build" would refuse).
// Prints one line per problem ("file: doc N (Kind/name): message") and
// "ok: ..." per file; exits 1 on any problem.
import { readFileSync, readdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import yaml from "js-yaml";

const require = createRequire(import.meta.url);
const root = process.argv[2] || join(dirname(fileURLToPath(import.meta.url)), "..", "..");
let problems = 0;

function fail(msg) {
  problems++;
  console.log(msg);
}

// "apps/v1" + "Deployment" -> kubernetes-models/apps/v1/Deployment
function modelPath(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Za-z]+$/.test(kind))
    return null;
  const parts = apiVersion.split("/");
  if (parts.length > 2 || parts.some((p) => !/^[a-z0-9.-]+$/.test(p))) return null;
  return `kubernetes-models/${parts.join("/")}/${kind}`;
}

const k8sDir = join(root, "deploy", "k8s");
for (const name of readdirSync(k8sDir).filter((n) => n.endsWith(".yaml")).sort()) {
  if (name === "kustomization.yaml") continue;
  const file = join("deploy", "k8s", name);
  let docs;
  try {
    docs = yaml.loadAll(readFileSync(join(k8sDir, name), "utf8"));
  } catch (e) {
    fail(`${file}: YAML: ${e.message.split("\n")[0]}`);
    continue;
  }
  let n = 0;
  const before = problems;
  for (const [i, doc] of docs.entries()) {
    if (doc === null || doc === undefined) continue;
    n++;
    const what = `${file}: doc ${i + 1} (${doc.kind}/${doc.metadata && doc.metadata.name})`;
    const path = modelPath(doc.apiVersion, doc.kind);
    let Model = null;
    try {
      Model = path && (await import(path))[doc.kind];
    } catch (e) {
      Model = null;
    }
    if (!Model) {
      fail(`${what}: unknown apiVersion/kind ${doc.apiVersion} ${doc.kind}`);
      continue;
    }
    try {
      new Model(doc).validate();
    } catch (e) {
      fail(`${what}: ${e.message}`);
    }
  }
  if (n === 0) fail(`${file}: no documents`);
  else if (problems === before) console.log(`ok: ${file} (${n} documents)`);
}

const { validate } = require("dockerfile-utils");
const dockerfile = join("deploy", "container", "Dockerfile");
const diags = await Promise.resolve(validate(readFileSync(join(root, dockerfile), "utf8")));
for (const d of diags) fail(`${dockerfile}:${d.range.start.line + 1}: ${d.message}`);
if (diags.length === 0) console.log(`ok: ${dockerfile}`);

process.exit(problems ? 1 : 0);
