using System.Text.Json.Nodes;

namespace Dolly.Api.Tests;

/// <summary>
/// The kinds that are stored but not run (workloads, pods, services, accounts, configuration, RBAC) with the real
/// kubectl: its generators, `get all`, printer columns, discovery, client-side apply updates and the validation
/// kube-apiserver applies to them.
/// </summary>
public sealed class KubectlWorkloadTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    private const string Deployment = """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web, namespace: shop}
        spec:
          replicas: 3
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers:
              - name: web
                image: nginx:1.27
                ports: [{containerPort: 80}]
                env: [{name: MODE, value: prod}]
              - name: sidecar
                image: busybox:1.36
        """;

    private async Task Namespace(string name)
    {
        var r = await fx.KubectlAsync("create", "ns", name);
        Assert.True(r.ExitCode == 0 || r.Stderr.Contains("AlreadyExists", StringComparison.Ordinal), r.Stderr);
    }

    [Fact]
    public async Task GetAll_ShowsWorkloadsPodsAndServices_WithUpstreamColumns()
    {
        await Namespace("allkinds");
        (await fx.KubectlAsync("create", "deployment", "web", "--image=nginx:1.27", "--replicas=2", "-n", "allkinds")).ShouldSucceed();
        string tpl(string kind, string name, string extra) =>
            $"apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: allkinds}}\nspec: {{{extra}selector: {{matchLabels: {{app: {name}}}}}, template: {{metadata: {{labels: {{app: {name}}}}}, spec: {{nodeSelector: {{disk: ssd}}, containers: [{{name: c, image: 'registry.k8s.io/pause:3.10'}}]}}}}}}\n";
        (await fx.KubectlWithInputAsync(tpl("DaemonSet", "agent", "") + "---\n" + tpl("StatefulSet", "db", "serviceName: db, replicas: 3, ") + "---\n" + tpl("ReplicaSet", "rs", "replicas: 2, "), "apply", "-f", "-")).ShouldSucceed();
        (await fx.KubectlWithInputAsync("apiVersion: v1\nkind: Pod\nmetadata: {name: lone, namespace: allkinds}\nspec: {containers: [{name: a, image: 'busybox:1.36'}, {name: b, image: 'busybox:1.36'}]}\n", "apply", "-f", "-")).ShouldSucceed();
        (await fx.KubectlAsync("create", "service", "clusterip", "db", "--tcp=5432:5432", "-n", "allkinds")).ShouldSucceed();

        var all = (await fx.KubectlAsync("get", "all", "-n", "allkinds")).ShouldSucceed().Stdout;
        Assert.Matches(@"NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\npod/lone\s+0/2\s+Pending\s+0\s", all);
        Assert.Matches(@"NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE\nservice/db\s+ClusterIP\s+<none>\s+<none>\s+5432/TCP\s", all);
        Assert.Matches(@"NAME\s+DESIRED\s+CURRENT\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+NODE SELECTOR\s+AGE\ndaemonset\.apps/agent\s+0\s+0\s+0\s+0\s+0\s+disk=ssd\s", all);
        Assert.Matches(@"NAME\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+AGE\ndeployment\.apps/web\s+0/2\s+0\s+0\s", all);
        Assert.Matches(@"NAME\s+DESIRED\s+CURRENT\s+READY\s+AGE\nreplicaset\.apps/rs\s+2\s+0\s+0\s", all);
        Assert.Matches(@"NAME\s+READY\s+AGE\nstatefulset\.apps/db\s+0/3\s", all);

        var wide = (await fx.KubectlAsync("get", "deploy,rs", "-n", "allkinds", "-o", "wide")).ShouldSucceed().Stdout;
        Assert.Matches(@"deployment\.apps/web\s+0/2\s+0\s+0\s+\S+\s+nginx\s+nginx:1\.27\s+app=web", wide);
        Assert.Matches(@"replicaset\.apps/rs\s+2\s+0\s+0\s+\S+\s+c\s+registry\.k8s\.io/pause:3\.10\s+app=rs", wide);
        var svc = (await fx.KubectlAsync("get", "svc", "db", "-n", "allkinds", "-o", "jsonpath={.spec.type} {.spec.ports[0].protocol} {.spec.ports[0].targetPort} {.spec.selector.app}")).ShouldSucceed();
        Assert.Equal("ClusterIP TCP 5432 db", svc.Stdout);
        var generation = (await fx.KubectlAsync("get", "deploy", "web", "-n", "allkinds", "-o", "jsonpath={.metadata.generation} {.spec.strategy.rollingUpdate.maxSurge} {.spec.revisionHistoryLimit}")).ShouldSucceed();
        Assert.Equal("1 25% 10", generation.Stdout);
    }

    [Fact]
    public async Task Generators_CreateServiceAccountConfigMapSecret()
    {
        await Namespace("gens");
        (await fx.KubectlAsync("create", "serviceaccount", "robot", "-n", "gens")).ShouldSucceed();
        (await fx.KubectlAsync("create", "configmap", "settings", "--from-literal=color=blue", "--from-literal=size=9", "-n", "gens")).ShouldSucceed();
        (await fx.KubectlAsync("create", "secret", "generic", "creds", "--from-literal=user=admin", "--from-literal=password=s3cret", "-n", "gens")).ShouldSucceed();
        (await fx.KubectlAsync("create", "role", "reader", "--verb=get,list", "--resource=configmaps", "-n", "gens")).ShouldSucceed();
        (await fx.KubectlAsync("create", "rolebinding", "robot-reads", "--role=reader", "--serviceaccount=gens:robot", "-n", "gens")).ShouldSucceed();
        (await fx.KubectlAsync("create", "clusterrole", "gens-viewer", "--verb=get", "--resource=pods")).ShouldSucceed();
        (await fx.KubectlAsync("create", "clusterrolebinding", "gens-viewer", "--clusterrole=gens-viewer", "--user=jane", "--group=ops")).ShouldSucceed();

        Assert.Matches(@"NAME\s+SECRETS\s+AGE\nrobot\s+0\s", (await fx.KubectlAsync("get", "sa", "robot", "-n", "gens")).ShouldSucceed().Stdout);
        Assert.Matches(@"NAME\s+DATA\s+AGE\nsettings\s+2\s", (await fx.KubectlAsync("get", "cm", "settings", "-n", "gens")).ShouldSucceed().Stdout);
        Assert.Matches(@"NAME\s+TYPE\s+DATA\s+AGE\ncreds\s+Opaque\s+2\s", (await fx.KubectlAsync("get", "secret", "creds", "-n", "gens")).ShouldSucceed().Stdout);
        Assert.Matches(@"NAME\s+CREATED AT\nreader\s+\d{4}-\d\d-\d\dT", (await fx.KubectlAsync("get", "role", "reader", "-n", "gens")).ShouldSucceed().Stdout);
        Assert.Matches(@"robot-reads\s+Role/reader\s+\S+\s+gens/robot",
            (await fx.KubectlAsync("get", "rolebinding", "robot-reads", "-n", "gens", "-o", "wide")).ShouldSucceed().Stdout);
        Assert.Matches(@"gens-viewer\s+ClusterRole/gens-viewer\s+\S+\s+jane\s+ops",
            (await fx.KubectlAsync("get", "clusterrolebinding", "gens-viewer", "-o", "wide")).ShouldSucceed().Stdout);
        var password = (await fx.KubectlAsync("get", "secret", "creds", "-n", "gens", "-o", "jsonpath={.data.password}")).ShouldSucceed();
        Assert.Equal("s3cret", System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(password.Stdout)));

        // stringData is folded into data and never stored.
        (await fx.KubectlWithInputAsync("apiVersion: v1\nkind: Secret\nmetadata: {name: plain, namespace: gens}\nstringData: {token: abc}\n", "apply", "-f", "-")).ShouldSucceed();
        var plain = (await fx.KubectlAsync("get", "secret", "plain", "-n", "gens", "-o", "json")).ShouldSucceed();
        var secret = JsonNode.Parse(plain.Stdout)!;
        Assert.Equal("YWJj", secret["data"]!["token"]!.GetValue<string>());
        Assert.Null(secret["stringData"]);
        Assert.Equal("Opaque", secret["type"]!.GetValue<string>());

        var roleRef = (await fx.KubectlAsync("patch", "rolebinding", "robot-reads", "-n", "gens", "--type", "merge", "-p", """{"roleRef":{"name":"other"}}""")).ShouldFail();
        Assert.Contains("roleRef: Invalid value", roleRef.Stderr, StringComparison.Ordinal);
        Assert.Contains("cannot change roleRef", roleRef.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Deployment_ClientSideApplyUpdate_MergesContainersByName()
    {
        await Namespace("shop");
        (await fx.KubectlWithInputAsync(Deployment, "apply", "-f", "-")).ShouldSucceed();
        string changed = Deployment.Replace("image: nginx:1.27", "image: nginx:1.28", StringComparison.Ordinal).Replace("replicas: 3", "replicas: 4", StringComparison.Ordinal);
        var applied = (await fx.KubectlWithInputAsync(changed, "apply", "-f", "-")).ShouldSucceed();
        Assert.Contains("deployment.apps/web configured", applied.Stdout, StringComparison.Ordinal);

        var json = JsonNode.Parse((await fx.KubectlAsync("get", "deploy", "web", "-n", "shop", "-o", "json")).ShouldSucceed().Stdout)!;
        var containers = json["spec"]!["template"]!["spec"]!["containers"]!.AsArray();
        Assert.Equal(["web", "sidecar"], containers.Select(c => c!["name"]!.GetValue<string>()));
        Assert.Equal("nginx:1.28", containers[0]!["image"]!.GetValue<string>());
        Assert.Equal(80, containers[0]!["ports"]![0]!["containerPort"]!.GetValue<int>());
        Assert.Equal("prod", containers[0]!["env"]![0]!["value"]!.GetValue<string>());
        Assert.Equal(4, json["spec"]!["replicas"]!.GetValue<int>());
        Assert.Equal(2, json["metadata"]!["generation"]!.GetValue<int>());

        // kubectl set image and scale's fallback (a patch of spec.replicas) are plain strategic patches.
        (await fx.KubectlAsync("set", "image", "deployment/web", "sidecar=busybox:1.37", "-n", "shop")).ShouldSucceed();
        Assert.Equal("nginx:1.28 busybox:1.37", (await fx.KubectlAsync("get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.template.spec.containers[*].image}")).ShouldSucceed().Stdout);

        string dropped = changed.Replace("\n      - name: sidecar\n        image: busybox:1.36", "", StringComparison.Ordinal);
        Assert.DoesNotContain("sidecar", dropped, StringComparison.Ordinal);
        (await fx.KubectlWithInputAsync(dropped, "apply", "-f", "-")).ShouldSucceed();
        Assert.Equal("web", (await fx.KubectlAsync("get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.template.spec.containers[*].name}")).ShouldSucceed().Stdout);
    }

    [Fact]
    public async Task Workloads_AreValidatedLikeKubeApiserver()
    {
        await Namespace("checks");
        var mismatch = (await fx.KubectlWithInputAsync(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad, namespace: checks}\nspec: {selector: {matchLabels: {app: a}}, template: {metadata: {labels: {app: b}}, spec: {containers: [{name: c, image: x}]}}}\n",
            "apply", "-f", "-")).ShouldFail();
        Assert.Contains("spec.template.metadata.labels: Invalid value", mismatch.Stderr, StringComparison.Ordinal);
        Assert.Contains("`selector` does not match template `labels`", mismatch.Stderr, StringComparison.Ordinal);
        var noSelector = (await fx.KubectlWithInputAsync(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: bad, namespace: checks}\nspec: {serviceName: s, template: {metadata: {labels: {app: b}}, spec: {containers: [{name: c}]}}}\n",
            "apply", "-f", "-")).ShouldFail();
        Assert.Contains("spec.selector: Required value", noSelector.Stderr, StringComparison.Ordinal);
        Assert.Contains("spec.template.spec.containers[0].image: Required value", noSelector.Stderr, StringComparison.Ordinal);
        var typo = (await fx.KubectlWithInputAsync("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo, namespace: checks}\ndatta: {a: b}\n", "apply", "-f", "-")).ShouldFail();
        Assert.Contains("unknown field \"datta\"", typo.Stderr, StringComparison.Ordinal);

        (await fx.KubectlAsync("create", "deployment", "fixed", "--image=nginx", "-n", "checks")).ShouldSucceed();
        var selector = (await fx.KubectlAsync("patch", "deploy", "fixed", "-n", "checks", "--type", "merge", "-p",
            """{"spec":{"selector":{"matchLabels":{"app":"other"}},"template":{"metadata":{"labels":{"app":"other"}}}}}""")).ShouldFail();
        Assert.Contains("spec.selector: Invalid value", selector.Stderr, StringComparison.Ordinal);
        Assert.Contains("field is immutable", selector.Stderr, StringComparison.Ordinal);

        (await fx.KubectlWithInputAsync("apiVersion: v1\nkind: Pod\nmetadata: {name: fixed, namespace: checks}\nspec: {containers: [{name: c, image: 'nginx:1.27'}]}\n", "apply", "-f", "-")).ShouldSucceed();
        (await fx.KubectlAsync("set", "image", "pod/fixed", "c=nginx:1.28", "-n", "checks")).ShouldSucceed();
        var restart = (await fx.KubectlAsync("patch", "pod", "fixed", "-n", "checks", "-p", """{"spec":{"restartPolicy":"Never"}}""")).ShouldFail();
        Assert.Contains("pod updates may not change fields other than", restart.Stderr, StringComparison.Ordinal);

        (await fx.KubectlWithInputAsync("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen, namespace: checks}\nimmutable: true\ndata: {a: b}\n", "apply", "-f", "-")).ShouldSucceed();
        var frozen = (await fx.KubectlAsync("patch", "cm", "frozen", "-n", "checks", "--type", "merge", "-p", """{"data":{"a":"c"}}""")).ShouldFail();
        Assert.Contains("data: Forbidden: field is immutable when `immutable` is set", frozen.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Discovery_ListsTheKinds_LegacyAndAggregated()
    {
        var resources = (await fx.KubectlAsync("api-resources", "-o", "wide")).ShouldSucceed().Stdout;
        foreach (var (name, shortName, group, kind) in new[]
                 {
                     ("deployments", "deploy", "apps/v1", "Deployment"), ("daemonsets", "ds", "apps/v1", "DaemonSet"),
                     ("statefulsets", "sts", "apps/v1", "StatefulSet"), ("replicasets", "rs", "apps/v1", "ReplicaSet"),
                     ("serviceaccounts", "sa", "v1", "ServiceAccount"), ("configmaps", "cm", "v1", "ConfigMap"),
                     ("services", "svc", "v1", "Service"), ("pods", "po", "v1", "Pod"),
                 })
        {
            Assert.Matches($@"\n{name}\s+{shortName}\s+{group.Replace(".", "\\.", StringComparison.Ordinal)}\s+true\s+{kind}\s+create,delete,deletecollection,get,list,patch,update,watch", resources);
        }

        Assert.Matches(@"\nclusterrolebindings\s+rbac\.authorization\.k8s\.io/v1\s+false\s+ClusterRoleBinding\s", resources);
        Assert.Matches(@"\nroles\s+rbac\.authorization\.k8s\.io/v1\s+true\s+Role\s", resources);
        Assert.Matches(@"\nsecrets\s+v1\s+true\s+Secret\s", resources);
        var all = (await fx.KubectlAsync("api-resources", "--categories=all", "-o", "name")).ShouldSucceed().Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["daemonsets.apps", "deployments.apps", "pods", "replicasets.apps", "services", "statefulsets.apps"], all.Order(StringComparer.Ordinal));

        using var http = fx.Http();
        var apps = JsonNode.Parse(await http.GetStringAsync("/apis/apps/v1", TestContext.Current.CancellationToken))!;
        var names = apps["resources"]!.AsArray().Select(r => r!["name"]!.GetValue<string>()).ToList();
        Assert.Equal(["daemonsets", "daemonsets/status", "deployments", "deployments/status", "replicasets", "replicasets/status", "statefulsets", "statefulsets/status"], names);
        var core = JsonNode.Parse(await http.GetStringAsync("/api/v1", TestContext.Current.CancellationToken))!;
        var pods = core["resources"]!.AsArray().Single(r => r!["name"]!.GetValue<string>() == "pods")!;
        Assert.Equal(["po"], pods["shortNames"]!.AsArray().Select(x => x!.GetValue<string>()));
        Assert.Equal(["all"], pods["categories"]!.AsArray().Select(x => x!.GetValue<string>()));

        var explain = (await fx.KubectlAsync("explain", "deployment.spec")).ShouldSucceed().Stdout;
        Assert.Contains("replicas\t<integer>", explain, StringComparison.Ordinal);
    }
}
