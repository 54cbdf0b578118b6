// Start a kestreld job from a deployment pipeline and wait until it finishes.
// Usage: KESTREL_API_TOKEN=... node trigger_job.js nightly

const BASE = "http://127.0.0.1:7420/v1";
const POLL_INTERVAL_MS = 5000;

async function api(path: string, method = "GET"): Promise<any> {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: { Authorization: `Bearer ${process.env.KESTREL_API_TOKEN}` },
  });
  if (res.status === 429) {
    const wait = Number(res.headers.get("Retry-After") ?? "1") * 1000;
    await new Promise((r) => setTimeout(r, wait));
    return api(path, method);
  }
  if (!res.ok) throw new Error(`kestreld answered ${res.status}`);
  return res.json();
}

export async function runJob(name: string): Promise<string> {
  const { run_id } = await api(`/jobs/${name}/run`, "POST");
  for (;;) {
    const run = await api(`/runs/${run_id}`);
    if (run.state === "succeeded" || run.state === "failed") return run.state;
    await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
  }
}
