using System.Diagnostics;
using System.Reflection;

namespace Portcullis.EndToEnd.Harness;

// Finds the published `portcullis` binary and runs its CLI verbs.
public static class PortcullisBinary
{
    public const string EnvironmentVariable = "PORTCULLIS_BIN";
    private const string PublishedPath = "artifacts/publish/linux-x64/portcullis";

    // The binary's path; fails the test (never skips it) when there is none.
    public static string Require() => Locate(Environment.GetEnvironmentVariable(EnvironmentVariable));

    // `fromEnvironment` is the value of PORTCULLIS_BIN (null or empty: the published path).
    public static string Locate(string? fromEnvironment)
    {
        var path = fromEnvironment;
        string origin;
        if (!string.IsNullOrEmpty(path))
        {
            origin = $"${EnvironmentVariable}";
        }
        else
        {
            var root = RepositoryRoot() ?? throw new InvalidOperationException(
                $"portcullis binary not found: ${EnvironmentVariable} is not set and no Appliance.sln above {AppContext.BaseDirectory}");
            path = Path.Combine(root, PublishedPath);
            origin = $"<repo>/{PublishedPath}";
        }

        if (!File.Exists(path))
        {
            throw new FileNotFoundException(
                $"portcullis binary not found at {path} ({origin}). Publish it first (build/ publish script, " +
                $"linux-x64) or point ${EnvironmentVariable} at it.", path);
        }

        return path;
    }

    // The directory holding Appliance.sln: above the test assembly, or above the project directory
    // recorded at build time (the build output may live outside the tree, see PORTCULLIS_OBJ).
    public static string? RepositoryRoot()
    {
        var buildTimeProjectDir = typeof(PortcullisBinary).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "EndToEndProjectDirectory")?.Value;
        foreach (var start in new[] { AppContext.BaseDirectory, buildTimeProjectDir, Environment.CurrentDirectory })
        {
            for (var dir = start is null ? null : new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Appliance.sln")))
                {
                    return dir.FullName;
                }
            }
        }

        return null;
    }

    public static Task<CliResult> RunAsync(params string[] arguments) => RunProcessAsync(Require(), arguments);

    // Any program, with its output collected; killed (and a TimeoutException) after 60 s.
    public static async Task<CliResult> RunProcessAsync(string file, string[] arguments, params (string Name, string Value)[] environment)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', arguments)} did not finish within 60s");
        }

        return new CliResult(process.ExitCode, await stdout, await stderr);
    }

    private static readonly Lazy<Task<string>> VersionText = new(async () => (await RunAsync("version")).Stdout.Trim());

    // The output of `portcullis version`.
    public static Task<string> VersionAsync() => VersionText.Value;
}

public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}--- stderr\n{Stderr}";
}
