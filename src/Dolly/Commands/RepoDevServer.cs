using System.CommandLine;
using Dolly.Repository.Storage;

namespace Dolly.Commands;

/// <summary>
/// <c>dolly repo dev-server</c>: a real S3 server on loopback to try snapshot repositories with (Ceph's radosgw on a
/// single-node cluster, see <see cref="S3DevServer"/>). Prints the endpoint, the keys and what to apply.
/// </summary>
internal static class RepoDevServer
{
    /// <summary>The bucket created unless --bucket names another.</summary>
    internal const string DefaultBucket = "dolly";

    /// <summary>The Secret the printed example stores the S3 keys in (the key names S3 tools conventionally use).</summary>
    internal const string SecretName = "dolly-s3-dev";

    private const string StartTimeoutText = "4 minutes";
    private static readonly TimeSpan StartTimeout = TimeSpan.FromMinutes(4);

    /// <summary>The <c>dev-server</c> command, for the <c>dolly repo</c> group.</summary>
    public static Command Build(CliContext context)
    {
        var dir = new Option<string?>("--dir")
        {
            Description = "State directory of the server (config, data, logs). Default: $XDG_DATA_HOME/dolly/s3-dev, else ~/.local/share/dolly/s3-dev",
            HelpName = "DIR",
        };
        var bucket = new Option<string>("--bucket") { Description = "Bucket to create (if missing) and put in the example", DefaultValueFactory = _ => DefaultBucket, HelpName = "NAME" };
        var stop = new Option<bool>("--stop") { Description = "Stop the server (radosgw, the OSD and the monitor); its data stays for the next start" };
        var destroy = new Option<bool>("--destroy") { Description = "Stop the server and delete its state directory with every object in it" };
        var command = new Command(
            "dev-server",
            "Start (or reattach to) a real S3 server on 127.0.0.1 to try snapshot repositories: Ceph's radosgw on a single-node Ceph cluster " +
            "kept in one directory (needs the Debian packages ceph-mon, ceph-osd, radosgw and ceph-common). Prints the endpoint, " +
            "the keys, and a Secret and SnapshotRepository to apply. The server keeps running after dolly exits; --stop stops it.")
        {
            dir, bucket, stop, destroy,
        };
        command.Validators.Add(r =>
        {
            if (r.GetValue(stop) && r.GetValue(destroy))
            {
                r.AddError("--stop and --destroy cannot be combined");
            }
        });
        command.SetAction((parse, ct) => RunAsync(
            context,
            parse.GetValue(dir) is { Length: > 0 } d ? Path.GetFullPath(d) : DefaultDirectory(context),
            parse.GetValue(bucket)!,
            parse.GetValue(stop),
            parse.GetValue(destroy),
            ct));
        return command;
    }

    /// <summary>Where the server lives unless --dir says otherwise.</summary>
    internal static string DefaultDirectory(CliContext context)
    {
        var xdg = context.Host.GetEnvironmentVariable("XDG_DATA_HOME");
        if (!string.IsNullOrEmpty(xdg))
        {
            return Path.Combine(Path.GetFullPath(xdg), "dolly", "s3-dev");
        }

        var home = context.Host.GetEnvironmentVariable("HOME");
        return Path.Combine(string.IsNullOrEmpty(home) ? Environment.GetFolderPath(Environment.SpecialFolder.UserProfile) : home, ".local", "share", "dolly", "s3-dev");
    }

    private static async Task<int> RunAsync(CliContext context, string directory, string bucket, bool stop, bool destroy, CancellationToken ct)
    {
        var server = new S3DevServer(directory);
        var o = context.Host.Out;
        try
        {
            if (stop || destroy)
            {
                if (!File.Exists(Path.Combine(directory, "ceph.conf")))
                {
                    throw new CliFailureException(ExitCodes.NotFound, $"no S3 dev server in '{directory}'");
                }

                await (destroy ? server.DestroyAsync(ct) : server.StopAsync(ct)).ConfigureAwait(false);
                o.WriteLine(destroy ? $"destroyed the S3 dev server in '{directory}'" : $"stopped the S3 dev server in '{directory}' (its data stays; 'dolly repo dev-server' starts it again)");
                return ExitCodes.Ok;
            }

            var options = new S3ObjectStoreOptions { Endpoint = new Uri("http://127.0.0.1"), Bucket = bucket, AccessKey = "-", SecretKey = "-" };
            if (options.Validate() is [var problem, ..])
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, problem);
            }

            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(StartTimeout);
            S3DevServerEndpoint endpoint;
            try
            {
                endpoint = await server.StartAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new CliFailureException(ExitCodes.Unexpected, $"the S3 dev server in '{directory}' did not start within {StartTimeoutText}; see {Path.Combine(directory, "log")}");
            }

            bool created;
            using (var store = new S3ObjectStore(endpoint.ToOptions(bucket)))
            {
                created = await store.CreateBucketAsync(ct).ConfigureAwait(false);
            }

            Print(context, directory, bucket, created, endpoint);
            return ExitCodes.Ok;
        }
        catch (InvalidOperationException ex)
        {
            // The script's own message (a missing package, a port taken, a daemon that did not come up) says what to do.
            throw new CliFailureException(ExitCodes.Unexpected, ex.Message);
        }
        catch (ObjectStoreException ex)
        {
            throw new CliFailureException(ExitCodes.Unexpected, ex.Message);
        }
    }

    private static void Print(CliContext context, string directory, string bucket, bool created, S3DevServerEndpoint e)
    {
        var o = context.Host.Out;
        o.WriteLine($"S3 dev server (Ceph radosgw, single node) running; state, data and logs in '{directory}'");
        o.WriteLine($"  endpoint:    {e.Endpoint}");
        o.WriteLine($"  region:      {e.Region}");
        o.WriteLine($"  bucket:      {bucket}{(created ? " (created)" : string.Empty)}");
        o.WriteLine($"  access key:  {e.AccessKey}");
        o.WriteLine($"  secret key:  {e.SecretKey}");
        o.WriteLine("  addressing:  path style (http://host:port/bucket/key)");
        o.WriteLine();
        o.WriteLine("For S3 tools (aws, restic, rclone):");
        o.WriteLine($"  export AWS_ENDPOINT_URL={e.Endpoint.GetLeftPart(UriPartial.Authority)} AWS_ACCESS_KEY_ID={e.AccessKey} AWS_SECRET_ACCESS_KEY={e.SecretKey} AWS_DEFAULT_REGION={e.Region}");
        o.WriteLine($"  dolly repo init --repo s3://{bucket}/dolly");
        o.WriteLine($"  restic -r s3:{e.Endpoint.GetLeftPart(UriPartial.Authority)}/{bucket}/restic init");
        o.WriteLine();
        o.WriteLine("To use it from 'dolly up' (kubectl apply -f -; the SnapshotRepository kind is dolly.io/v1alpha1):");
        o.WriteLine($"""
            apiVersion: v1
            kind: Secret
            metadata:
              name: {SecretName}
              namespace: default
            stringData:
              AWS_ACCESS_KEY_ID: {e.AccessKey}
              AWS_SECRET_ACCESS_KEY: {e.SecretKey}
            ---
            apiVersion: dolly.io/v1alpha1
            kind: SnapshotRepository
            metadata:
              name: dev
            spec:
              s3:
                endpoint: {e.Endpoint.GetLeftPart(UriPartial.Authority)}
                region: {e.Region}
                bucket: {bucket}
                prefix: cluster-1
                pathStyle: true
                credentialsSecretRef:
                  name: {SecretName}
                  namespace: default
              encryption:
                keySecretRef:
                  name: dolly-repo-key
                  namespace: default
            """);
        o.WriteLine("and the encryption key, which only you keep (without it nothing in the repository can be read):");
        o.WriteLine("  kubectl -n default create secret generic dolly-repo-key --from-literal=key=\"$(head -c 32 /dev/urandom | base64)\"");
        o.WriteLine();
        o.WriteLine($"Stop it with 'dolly repo dev-server --stop{(directory == DefaultDirectory(context) ? string.Empty : $" --dir {directory}")}'.");
    }
}
