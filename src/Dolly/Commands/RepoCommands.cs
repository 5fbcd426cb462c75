using System.CommandLine;
using System.Globalization;
using System.Text.Json.Serialization;
using Dolly.Repository;
using Dolly.Repository.Format;
using Dolly.Repository.Storage;
using Dolly.Repository.Transfer;
using Dolly.Storage;
using Spectre.Console;

namespace Dolly.Commands;

/// <summary>
/// <c>dolly repo init|list|verify|prune|delete|upload|restore|dev-server</c>: snapshot repositories in a directory
/// or an S3 bucket (<c>s3://bucket/prefix</c>, endpoint and keys from the standard AWS variables), all through
/// IObjectStore.
/// </summary>
internal static class RepoCommands
{
    /// <summary>Environment variable naming the repository when --repo is not given.</summary>
    public const string RepoVariable = "DOLLY_REPO";

    /// <summary>Environment variable holding the repository key when --key-file is not given.</summary>
    public const string KeyVariable = "DOLLY_REPO_KEY";

    /// <summary>Environment variable holding the S3 endpoint (the AWS tools' name for it).</summary>
    public const string EndpointVariable = "AWS_ENDPOINT_URL";

    /// <summary>Environment variables holding the S3 access key, secret key and region.</summary>
    public const string AccessKeyVariable = "AWS_ACCESS_KEY_ID", SecretKeyVariable = "AWS_SECRET_ACCESS_KEY", RegionVariable = "AWS_DEFAULT_REGION";

    /// <summary>The <c>repo</c> group; more subcommands (<c>dev-server</c>) attach with <c>group.Subcommands.Add</c>.</summary>
    public static Command Build(CliContext context)
    {
        var repoOption = new Option<string?>("--repo")
        {
            Description = $"Repository: a directory, or an s3://bucket/prefix URL. Default: ${RepoVariable}",
            Recursive = true,
            HelpName = "LOCATION",
        };
        var keyOption = new Option<string?>("--key-file")
        {
            Description = $"File holding the repository key (its bytes; one trailing newline is ignored). Default: ${KeyVariable}",
            Recursive = true,
            HelpName = "FILE",
        };
        var repo = new Command("repo", "Snapshot repositories: encrypted, deduplicated, incremental copies of snapshots in a directory or object storage")
        {
            repoOption, keyOption,
        };
        var args = new RepoArgs(context, repoOption, keyOption);

        var chunkSize = new Option<string>("--chunk-size") { Description = "Bytes per chunk, a power of two from 1Mi to 16Mi", DefaultValueFactory = _ => "4Mi", HelpName = "SIZE" };
        var level = new Option<int>("--zstd-level") { Description = "zstd level for chunks, 0 for none", DefaultValueFactory = _ => RepositoryConfig.DefaultZstdLevel, HelpName = "N" };
        var init = new Command("init", "Create a repository in an empty location, with a fresh id and data key wrapped by the key") { chunkSize, level };
        init.SetAction((parse, ct) => Guard(() => InitAsync(args, parse, CliContext.ParseSize(parse.GetValue(chunkSize), "--chunk-size"), parse.GetValue(level), ct)));
        repo.Subcommands.Add(init);

        var listOutput = CliContext.OutputOption();
        var list = new Command("list", "List the repository's snapshots (manifests): ID, VOLUME, SNAPSHOT, SIZE, STORED chunks, PARENT, UPLOADED") { listOutput };
        list.Aliases.Add("ls");
        list.SetAction((parse, ct) => Guard(() => ListAsync(args, parse, parse.GetValue(listOutput) == "json", ct)));
        repo.Subcommands.Add(list);

        var sample = new Option<double>("--sample") { Description = "Percentage of stored chunks to fetch and verify (manifests and chunk presence are always checked)", DefaultValueFactory = _ => 100, HelpName = "PERCENT" };
        var verify = new Command("verify", "Check every manifest and that every chunk they use exists; fetch, decrypt and hash-check a sample of the chunks") { sample };
        verify.SetAction((parse, ct) => Guard(() => VerifyAsync(args, parse, parse.GetValue(sample), ct)));
        repo.Subcommands.Add(verify);

        var grace = new Option<string>("--grace") { Description = "Keep unreferenced chunks younger than this (a TimeSpan, e.g. 01:00:00 or 1.00:00:00)", DefaultValueFactory = _ => "01:00:00", HelpName = "DURATION" };
        var prune = new Command("prune", "Delete chunks no manifest references and older than the grace; sweeps nothing while an upload is in progress") { grace };
        prune.SetAction((parse, ct) => Guard(() => PruneAsync(args, parse, ParseDuration(parse.GetValue(grace)), ct)));
        repo.Subcommands.Add(prune);

        var deleteId = new Argument<string>("MANIFEST") { Description = "Manifest id (from repo list)" };
        var delete = new Command("delete", "Delete a snapshot's manifest; chunks only it used go at the next prune") { deleteId };
        delete.Aliases.Add("rm");
        delete.SetAction((parse, ct) => Guard(() => DeleteAsync(args, parse, parse.GetValue(deleteId)!, ct)));
        repo.Subcommands.Add(delete);

        var parallel = new Option<int>("--parallel") { Description = "Chunks in flight at once", DefaultValueFactory = _ => 8, HelpName = "N" };
        var full = new Option<bool>("--full") { Description = "Read every chunk with data, not only those changed since the lineage's last upload" };
        var uploadSnapshot = VolumeCommands.NameArgument("SNAPSHOT", "Snapshot to upload");
        var upload = new Command(
            "upload",
            "Upload a snapshot: incremental against the last upload of its lineage from this pool, deduplicated, resumable (run it again after an interruption); prints the manifest id")
        {
            uploadSnapshot, parallel, full,
        };
        upload.SetAction((parse, ct) => Guard(() => UploadAsync(args, parse, parse.GetValue(uploadSnapshot)!, parse.GetValue(parallel), parse.GetValue(full), ct)));
        repo.Subcommands.Add(upload);

        var restoreId = new Argument<string>("MANIFEST") { Description = "Manifest id to restore" };
        var restoreVolume = VolumeCommands.NameArgument("VOLUME", "New volume to create");
        var restore = new Command("restore", "Restore a snapshot from the repository into a new volume; every chunk is verified before it is written") { restoreId, restoreVolume, parallel };
        restore.SetAction((parse, ct) => Guard(() => RestoreAsync(args, parse, parse.GetValue(restoreId)!, parse.GetValue(restoreVolume)!, parse.GetValue(parallel), ct)));
        repo.Subcommands.Add(restore);
        return repo;
    }

    private sealed record RepoArgs(CliContext Context, Option<string?> Repo, Option<string?> KeyFile);

    private static async Task<int> InitAsync(RepoArgs a, ParseResult parse, long chunkSize, int zstdLevel, CancellationToken ct)
    {
        var store = OpenStore(a, parse, create: true);
        if (chunkSize > RepositoryConfig.MaxChunkSize)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"--chunk-size {ByteSize.Format(chunkSize)} is larger than {ByteSize.Format(RepositoryConfig.MaxChunkSize)}");
        }

        var options = new RepositoryInitOptions { ChunkSize = (int)chunkSize, ZstdLevel = zstdLevel };
        var repo = await SnapshotRepository.InitAsync(store, ReadKey(a, parse), options, TimeProvider.System, ct).ConfigureAwait(false);
        a.Context.Host.Out.WriteLine($"created repository {repo.Id} at {repo.Location} ({ByteSize.Format(repo.ChunkSize)} chunks, zstd level {repo.Config.ZstdLevel}, AES-256-GCM)");
        return ExitCodes.Ok;
    }

    private static async Task<int> ListAsync(RepoArgs a, ParseResult parse, bool json, CancellationToken ct)
    {
        var repo = await OpenAsync(a, parse, ct).ConfigureAwait(false);
        var rows = new List<ManifestInfoJson>();
        await foreach (var id in repo.ListManifestIdsAsync(ct).ConfigureAwait(false))
        {
            if (await repo.GetManifestAsync(id, ct).ConfigureAwait(false) is { } m)
            {
                var i = m.Info;
                rows.Add(new ManifestInfoJson(i.Id, i.Volume, i.Snapshot, i.Size, m.Entries.Count, i.Parent, i.PoolId, i.SnapshotCreated, i.Uploaded));
            }
        }

        rows.Sort((x, y) => x.Uploaded.CompareTo(y.Uploaded));
        if (json)
        {
            a.Context.WriteJson(new RepoListJson(repo.Id, repo.Location, repo.ChunkSize, rows), RepoJson.Default.RepoListJson);
            return ExitCodes.Ok;
        }

        a.Context.Host.Out.WriteLine($"repository {repo.Id} at {repo.Location}, {ByteSize.Format(repo.ChunkSize)} chunks");
        var table = CliContext.NewTable("ID", "VOLUME", "SNAPSHOT", "SIZE", "STORED", "PARENT", "UPLOADED");
        foreach (var r in rows)
        {
            table.AddRow(r.Id, Markup.Escape(r.Volume), Markup.Escape(r.Snapshot), CliContext.Bytes(r.Size), FormattableString.Invariant($"{r.Chunks} chunks"), r.Parent ?? "-", CliContext.Time(r.Uploaded));
        }

        a.Context.Out.Write(table);
        return ExitCodes.Ok;
    }

    private static async Task<int> VerifyAsync(RepoArgs a, ParseResult parse, double sample, CancellationToken ct)
    {
        var repo = await OpenAsync(a, parse, ct).ConfigureAwait(false);
        var report = await WithProgressAsync(a.Context, "verifying chunks", progress => RepositoryMaintenance.VerifyAsync(repo, sample, Random.Shared, progress, TimeProvider.System, ct)).ConfigureAwait(false);
        var o = a.Context.Host.Out;
        o.WriteLine($"verified {report.Manifests} manifest(s), {report.ChunksReferenced} referenced chunk(s) present of {report.ChunksStored} stored, {report.ChunksVerified} fetched and checked");
        foreach (var p in report.Problems)
        {
            o.WriteLine($"problem: {p}");
        }

        return report.IsClean ? ExitCodes.Ok : throw new CliFailureException(ExitCodes.Corrupt, $"the repository at {repo.Location} has {report.Problems.Count} problem(s)");
    }

    private static async Task<int> PruneAsync(RepoArgs a, ParseResult parse, TimeSpan grace, CancellationToken ct)
    {
        var repo = await OpenAsync(a, parse, ct).ConfigureAwait(false);
        var r = await RepositoryMaintenance.PruneAsync(repo, grace, UploadOptions.DefaultMarkerStaleAfter, TimeProvider.System, ct).ConfigureAwait(false);
        var o = a.Context.Host.Out;
        if (r.LiveUploads.Count > 0)
        {
            o.WriteLine($"nothing deleted: {r.LiveUploads.Count} upload(s) in progress may reference unreferenced chunks; prune again when they end:");
            foreach (var u in r.LiveUploads)
            {
                o.WriteLine($"  {u}");
            }

            return ExitCodes.Ok;
        }

        o.WriteLine($"deleted {r.ChunksDeleted} unreferenced chunk(s) ({ByteSize.Format(r.BytesDeleted)}); kept {r.ChunksReferenced} referenced by {r.Manifests} manifest(s) and {r.ChunksKeptYoung} younger than {grace}");
        return ExitCodes.Ok;
    }

    private static async Task<int> DeleteAsync(RepoArgs a, ParseResult parse, string id, CancellationToken ct)
    {
        var repo = await OpenAsync(a, parse, ct).ConfigureAwait(false);
        await repo.DeleteManifestAsync(id, ct).ConfigureAwait(false);
        a.Context.Host.Out.WriteLine($"deleted manifest {id}; chunks only it used go at the next prune");
        return ExitCodes.Ok;
    }

    private static async Task<int> UploadAsync(RepoArgs a, ParseResult parse, string snapshot, int parallel, bool full, CancellationToken ct)
    {
        var repo = await OpenAsync(a, parse, ct).ConfigureAwait(false);
        using var pool = a.Context.OpenPool(parse);
        var options = new UploadOptions { StateDirectory = CliContext.BesidePool(pool.Directory, "-uploads"), Parallelism = parallel, Full = full };
        var r = await WithProgressAsync(a.Context, $"uploading {snapshot}", progress => SnapshotUploader.UploadAsync(repo, pool, snapshot, options with { Progress = progress }, ct)).ConfigureAwait(false);
        var i = r.Manifest.Info;
        string kind = i.Parent is null ? "full" : $"incremental on {i.Parent}";
        a.Context.Host.Out.WriteLine(
            $"uploaded snapshot '{snapshot}' as manifest {i.Id} ({kind}{(r.Resumed ? ", resumed" : string.Empty)}): " +
            FormattableString.Invariant($"{r.ChunksRead} chunk(s) read, {r.ChunksPut} sent ({ByteSize.Format(r.BytesPut)}), {r.ChunksDeduplicated} already stored, {r.ChunksFromParent} unchanged from the parent, {r.ChunksFromJournal} from the interrupted attempt; ") +
            TransferProgress.Rate(r.ChunksRead * (long)repo.ChunkSize, r.Elapsed));
        return ExitCodes.Ok;
    }

    private static async Task<int> RestoreAsync(RepoArgs a, ParseResult parse, string id, string volume, int parallel, CancellationToken ct)
    {
        SnapshotRepository.RequireManifestId(id);
        var repo = await OpenAsync(a, parse, ct).ConfigureAwait(false);
        using var pool = a.Context.OpenPool(parse);
        var r = await WithProgressAsync(a.Context, $"restoring {id}", progress => SnapshotRestorer.RestoreAsync(repo, id, pool, volume, new RestoreOptions { Parallelism = parallel, Progress = progress }, ct)).ConfigureAwait(false);
        a.Context.Host.Out.WriteLine(
            $"restored manifest {id} (snapshot '{r.Manifest.Info.Snapshot}' of '{r.Manifest.Info.Volume}') as volume '{volume}' ({ByteSize.Format(r.Volume.Size)}): " +
            FormattableString.Invariant($"{r.ChunksFetched} chunk(s) fetched and verified, ") + TransferProgress.Rate(r.BytesWritten, r.Elapsed) + " written");
        return ExitCodes.Ok;
    }

    private static Task<SnapshotRepository> OpenAsync(RepoArgs a, ParseResult parse, CancellationToken ct) =>
        SnapshotRepository.OpenAsync(OpenStore(a, parse, create: false), ReadKey(a, parse), ct);

    private static IObjectStore OpenStore(RepoArgs a, ParseResult parse, bool create)
    {
        string? location = parse.GetValue(a.Repo) ?? a.Context.Host.GetEnvironmentVariable(RepoVariable);
        if (string.IsNullOrWhiteSpace(location))
        {
            throw new CliFailureException(ExitCodes.Usage, $"no repository: give --repo DIR|s3://bucket/prefix or set ${RepoVariable}");
        }

        int scheme = location.IndexOf("://", StringComparison.Ordinal);
        if (scheme > 0)
        {
            string name = location[..scheme];
            return name == "s3"
                ? OpenS3(location, a.Context.Host)
                : throw new CliFailureException(ExitCodes.InvalidArgument, $"repository '{location}': unknown scheme '{name}://' (a repository is a directory path or s3://bucket/prefix)");
        }

        return create ? DirectoryObjectStore.Create(location) : new DirectoryObjectStore(location);
    }

    /// <summary>
    /// An <c>s3://bucket/prefix</c> location: the endpoint, keys and region come from the variables the AWS tools
    /// read, so one shell set up for <c>aws</c> or restic (or by <c>dolly repo dev-server</c>) works here too.
    /// Addressing is path style, as radosgw and MinIO expect.
    /// </summary>
    internal static S3ObjectStore OpenS3(string location, CliHost host)
    {
        string rest = location["s3://".Length..];
        int slash = rest.IndexOf('/', StringComparison.Ordinal);
        string bucket = slash < 0 ? rest : rest[..slash];
        string prefix = slash < 0 ? string.Empty : rest[(slash + 1)..].Trim('/');
        if (bucket.Length == 0)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"repository '{location}': no bucket (expected s3://bucket/prefix)");
        }

        string Required(string variable) => host.GetEnvironmentVariable(variable) is { Length: > 0 } value
            ? value
            : throw new CliFailureException(ExitCodes.Usage, $"repository '{location}': ${variable} is not set (S3 repositories take the endpoint and keys from ${EndpointVariable}, ${AccessKeyVariable} and ${SecretKeyVariable})");

        string endpoint = Required(EndpointVariable);
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var endpointUri) || (endpointUri.Scheme != Uri.UriSchemeHttp && endpointUri.Scheme != Uri.UriSchemeHttps))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"${EndpointVariable} '{endpoint}' is not an http:// or https:// URL");
        }

        var options = new S3ObjectStoreOptions
        {
            Endpoint = endpointUri,
            Bucket = bucket,
            Prefix = prefix,
            AccessKey = Required(AccessKeyVariable),
            SecretKey = Required(SecretKeyVariable),
            Region = host.GetEnvironmentVariable(RegionVariable) is { Length: > 0 } region ? region : "us-east-1",
        };
        var problems = options.Validate();
        return problems.Count == 0
            ? new S3ObjectStore(options)
            : throw new CliFailureException(ExitCodes.InvalidArgument, $"repository '{location}': {string.Join("; ", problems)}");
    }

    private static byte[] ReadKey(RepoArgs a, ParseResult parse)
    {
        string? file = parse.GetValue(a.KeyFile);
        byte[] key;
        if (file is not null)
        {
            key = File.ReadAllBytes(file);
            int end = key.Length;
            end -= end > 0 && key[end - 1] == '\n' ? 1 : 0;
            end -= end > 0 && key[end - 1] == '\r' ? 1 : 0;
            key = key[..end];
        }
        else
        {
            string? text = a.Context.Host.GetEnvironmentVariable(KeyVariable);
            key = string.IsNullOrEmpty(text)
                ? throw new CliFailureException(ExitCodes.Usage, $"no repository key: give --key-file FILE or set ${KeyVariable}")
                : System.Text.Encoding.UTF8.GetBytes(text);
        }

        return key;
    }

    private static TimeSpan ParseDuration(string? text) =>
        TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var t) && t >= TimeSpan.Zero
            ? t
            : throw new CliFailureException(ExitCodes.InvalidArgument, $"--grace: '{text}' is not a duration like 01:00:00 (hh:mm:ss) or 2.00:00:00 (days)");

    /// <summary>Runs a command, turning repository and object store failures into <c>error:</c> lines and exit codes.</summary>
    private static async Task<int> Guard(Func<Task<int>> command)
    {
        try
        {
            return await command().ConfigureAwait(false);
        }
        catch (RepositoryException ex)
        {
            throw new CliFailureException(ExitCodeOf(ex.Error), ex.Message);
        }
        catch (ObjectStoreException ex)
        {
            int code = ex.Error == ObjectStoreError.NoSuchBucket ? ExitCodes.NotFound : ExitCodes.IoError;
            throw new CliFailureException(code, ex.Message);
        }
    }

    internal static int ExitCodeOf(RepositoryError error) => error switch
    {
        RepositoryError.NotARepository or RepositoryError.NotFound => ExitCodes.NotFound,
        RepositoryError.AlreadyExists => ExitCodes.AlreadyExists,
        RepositoryError.Corrupt => ExitCodes.Corrupt,
        RepositoryError.Busy => ExitCodes.InUse,
        RepositoryError.WrongKey or RepositoryError.UnsupportedFormat or RepositoryError.InvalidArgument => ExitCodes.InvalidArgument,
        _ => ExitCodes.Unexpected,
    };

    /// <summary>Runs a transfer with a progress bar (bytes, rate, ETA) on a terminal, silently otherwise.</summary>
    private static async Task<T> WithProgressAsync<T>(CliContext context, string description, Func<IProgress<TransferStatus>?, Task<T>> work)
    {
        if (!context.Host.ErrorIsTerminal)
        {
            return await work(null).ConfigureAwait(false);
        }

        T result = default!;
        await context.Error.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(description), maxValue: 1);
                result = await work(new TaskProgress(task)).ConfigureAwait(false);
                task.Value = task.MaxValue;
                task.StopTask();
            }).ConfigureAwait(false);
        return result;
    }

    private sealed class TaskProgress(ProgressTask task) : IProgress<TransferStatus>
    {
        public void Report(TransferStatus value)
        {
            task.MaxValue = Math.Max(1, value.BytesTotal);
            task.Value = value.BytesDone;
        }
    }
}

/// <summary>One manifest in <c>repo list -o json</c>.</summary>
internal sealed record ManifestInfoJson(string Id, string Volume, string Snapshot, long Size, int Chunks, string? Parent, Guid PoolId, DateTimeOffset SnapshotCreated, DateTimeOffset Uploaded);

/// <summary><c>repo list -o json</c>.</summary>
internal sealed record RepoListJson(Guid Id, string Location, int ChunkSize, IReadOnlyList<ManifestInfoJson> Snapshots);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(RepoListJson))]
internal sealed partial class RepoJson : JsonSerializerContext;
