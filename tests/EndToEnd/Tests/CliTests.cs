using Portcullis.EndToEnd.Harness;
using Xunit;

namespace Portcullis.EndToEnd.Tests;

// The command-line verbs other than `run`.
public sealed class CliTests : IAsyncLifetime
{
    private GatewayIni config = null!;

    public async Task InitializeAsync()
    {
        PortcullisBinary.Require(); // fail before making anything
        config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), GatewayIni.FreePort());
        await config.WriteAsync();
    }

    public Task DisposeAsync()
    {
        if (config is not null && Directory.Exists(config.Root))
        {
            Directory.Delete(config.Root, recursive: true);
        }

        return Task.CompletedTask;
    }

    [Fact]
    public async Task Scan_finds_clam_exe_and_exits_1()
    {
        var result = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, TestSignatures.ClamExe);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Matches($@"(?m)^{Regex(TestSignatures.ClamExe)}: \S*{Regex(TestSignatures.ClamExeName)}\S* FOUND$", result.Stdout);
    }

    [Fact]
    public async Task Scan_of_a_clean_file_exits_0_with_OK()
    {
        var clean = Path.Combine(config.Root, "clean.txt");
        await File.WriteAllTextAsync(clean, "nothing to see here\n");

        var result = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, clean);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Matches($"(?m)^{Regex(clean)}: OK$", result.Stdout);
    }

    [Fact]
    public async Task Scan_of_clean_and_infected_files_reports_each_and_exits_1()
    {
        var clean = Path.Combine(config.Root, "clean.txt");
        await File.WriteAllTextAsync(clean, "nothing to see here\n");
        var eicar = Path.Combine(config.Root, "eicar.txt");
        await File.WriteAllTextAsync(eicar, TestSignatures.Eicar);

        var result = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, clean, eicar);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Matches($"(?m)^{Regex(clean)}: OK$", result.Stdout);
        Assert.Matches($@"(?m)^{Regex(eicar)}: \S*{Regex(TestSignatures.EicarName)}\S* FOUND$", result.Stdout);
    }

    [Fact]
    public async Task Check_config_accepts_the_test_configuration()
    {
        var result = await PortcullisBinary.RunAsync("check-config", "--config", config.FilePath);

        Assert.True(result.ExitCode == 0, result.ToString());
    }

    [Fact]
    public async Task Check_config_with_a_bad_value_exits_78_naming_file_section_and_key()
    {
        config.Set("limits", "max_recipients", "plenty");
        await File.WriteAllTextAsync(config.FilePath, config.Render());

        var result = await PortcullisBinary.RunAsync("check-config", "--config", config.FilePath);

        Assert.True(result.ExitCode == 78, result.ToString());
        Assert.Contains(config.FilePath, result.Stderr);
        Assert.Contains("limits", result.Stderr);
        Assert.Contains("max_recipients", result.Stderr);
    }

    [Fact]
    public async Task Version_prints_something_and_exits_0()
    {
        var result = await PortcullisBinary.RunAsync("version");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Matches(@"\d+\.\d+", result.Stdout);
    }

    [Fact]
    public async Task Version_option_prints_the_program_version_and_exits_0()
    {
        var result = await PortcullisBinary.RunAsync("--version");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Matches(@"^portcullis \d+\.\d+\.\d+\n$", result.Stdout);
        Assert.StartsWith(result.Stdout.Trim() + "\n", (await PortcullisBinary.RunAsync("version")).Stdout);
    }

    [Fact]
    public async Task Run_help_prints_help_and_exits_0_without_starting_the_gateway()
    {
        // The configuration has a bad value: a gateway that started would exit 78.
        config.Set("limits", "max_recipients", "plenty");
        await File.WriteAllTextAsync(config.FilePath, config.Render());

        var result = await PortcullisBinary.RunAsync("run", "--config", config.FilePath, "--help");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("portcullis run [options]", result.Stdout);
        Assert.Contains("--config <FILE>", result.Stdout);
        Assert.Equal("", result.Stderr);
    }

    [Theory]
    [InlineData("run")]
    [InlineData("check-config")]
    [InlineData("scan")]
    [InlineData("version")]
    [InlineData("reload")]
    [InlineData("status")]
    [InlineData("quarantine")]
    [InlineData("quarantine list")]
    [InlineData("quarantine show")]
    [InlineData("quarantine release")]
    [InlineData("quarantine delete")]
    [InlineData("quarantine purge")]
    public async Task Every_verb_prints_its_help_and_exits_0(string verb)
    {
        var result = await PortcullisBinary.RunAsync([.. verb.Split(' '), "--help"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"Usage:\n  portcullis {verb}", result.Stdout);
        Assert.Contains("-h, --help", result.Stdout);
    }

    [Theory]
    [InlineData("")]
    [InlineData("frobnicate")]
    [InlineData("run --bogus")]
    [InlineData("scan")]
    [InlineData("scan --verbose x")]
    [InlineData("quarantine")]
    [InlineData("quarantine show")]
    [InlineData("quarantine purge --older-than soon")]
    public async Task Usage_errors_exit_64_with_the_problem_on_stderr(string args)
    {
        var result = await PortcullisBinary.RunAsync(args.Split(' ', StringSplitOptions.RemoveEmptyEntries));

        Assert.True(result.ExitCode == 64, result.ToString());
        Assert.StartsWith("portcullis: ", result.Stderr);
        Assert.Contains("--help' for usage", result.Stderr);
        Assert.Equal("", result.Stdout);
    }

    [Fact]
    public async Task Scan_policy_gives_the_gateways_verdict_on_a_banned_attachment()
    {
        // Harmless bytes under a double extension: no signature matches, the attachment rules do.
        var message = TestMessages.WithAttachment("invoice", "see attached", "invoice.pdf.exe", TestMessages.Noise(2048, 7));
        var path = Path.Combine(config.Root, "banned.eml");
        await using (var file = File.Create(path))
        {
            await message.WriteToAsync(file);
        }

        var plain = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, path);
        Assert.True(plain.ExitCode == 0, plain.ToString());
        Assert.Equal($"{path}: OK\n", plain.Stdout);

        var policy = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, "--policy", path);
        Assert.True(policy.ExitCode == 1, policy.ToString());
        Assert.Matches($@"(?m)^{Regex(path)}: Banned\.\S+ FOUND$", policy.Stdout);

        // The same verdict for a folder walked with -r.
        var tree = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, "--policy", "-r", config.Root);
        Assert.True(tree.ExitCode == 1, tree.ToString());
        Assert.Matches($@"(?m)^{Regex(path)}: Banned\.\S+ FOUND$", tree.Stdout);
    }

    [Fact]
    public async Task Scan_errors_go_to_stderr_and_exit_2()
    {
        var clean = Path.Combine(config.Root, "clean.txt");
        await File.WriteAllTextAsync(clean, "nothing to see here\n");
        var missing = Path.Combine(config.Root, "missing.txt");

        var result = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, clean, missing, config.Root);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal($"{clean}: OK\n", result.Stdout);
        Assert.Matches($"(?m)^{Regex(missing)}: ERROR ", result.Stderr);
        Assert.Matches($"(?m)^{Regex(config.Root)}: ERROR is a directory \\(use -r", result.Stderr);
    }

    [Fact]
    public async Task Scan_r_walks_subfolders_in_name_order_and_skips_links_and_fifos()
    {
        var tree = Path.Combine(config.Root, "tree");
        var deeper = Directory.CreateDirectory(Path.Combine(tree, "sub", "deeper")).FullName;
        var clean = Path.Combine(tree, "a-clean.txt");
        await File.WriteAllTextAsync(clean, "nothing to see here\n");
        var eicar = Path.Combine(deeper, "eicar.txt");
        await File.WriteAllTextAsync(eicar, TestSignatures.Eicar);
        var outside = Path.Combine(config.Root, "outside-eicar.txt");
        await File.WriteAllTextAsync(outside, TestSignatures.Eicar);
        File.CreateSymbolicLink(Path.Combine(tree, "loop"), tree);
        File.CreateSymbolicLink(Path.Combine(tree, "outside.txt"), outside);
        var fifo = Path.Combine(tree, "fifo");
        Assert.Equal(0, (await RunProcessAsync("mkfifo", [fifo])).ExitCode);

        var result = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, "-r", tree);

        Assert.True(result.ExitCode == 1, result.ToString());
        var lines = result.Stdout.TrimEnd('\n').Split('\n');
        Assert.Equal(2, lines.Length);
        Assert.Equal($"{clean}: OK", lines[0]);
        Assert.Matches($@"^{Regex(eicar)}: \S*{Regex(TestSignatures.EicarName)}\S* FOUND$", lines[1]);
        Assert.Equal("", result.Stderr);
    }

    [Fact]
    public async Task Scan_r_reports_a_folder_it_cannot_read_on_stderr_and_exits_2()
    {
        var tree = Path.Combine(config.Root, "tree");
        var closed = Directory.CreateDirectory(Path.Combine(tree, "closed")).FullName;
        await File.WriteAllTextAsync(Path.Combine(closed, "x.txt"), "x\n");
        var clean = Path.Combine(tree, "clean.txt");
        await File.WriteAllTextAsync(clean, "nothing to see here\n");
        OpenToOthers();
        File.SetUnixFileMode(closed, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        var result = await RunAsNobodyAsync("scan", "--config", config.FilePath, "-r", tree);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal($"{clean}: OK\n", result.Stdout);
        Assert.Matches($"(?m)^{Regex(closed)}: ERROR cannot read the folder", result.Stderr);
    }

    // The tmpfiles.d layout: /var/lib/portcullis is 0750, so another user cannot even see that
    // quarantine/ exists; or the quarantine folder itself is 0700.
    [Theory]
    [InlineData(true, "list")]
    [InlineData(true, "list --json")]
    [InlineData(true, "show 20240101-120000-1a2b3c4d")]
    [InlineData(true, "delete 20240101-120000-1a2b3c4d")]
    [InlineData(true, "purge --older-than 0")]
    [InlineData(false, "list")]
    public async Task Quarantine_verbs_run_by_a_user_who_cannot_read_the_folder_exit_1_saying_so(bool closedParent, string verb)
    {
        var parent = Path.Combine(config.Root, "lib");
        var quarantine = Path.Combine(parent, "quarantine");
        Directory.CreateDirectory(quarantine);
        config.Set("quarantine", "folder", quarantine);
        await File.WriteAllTextAsync(config.FilePath, config.Render());
        OpenToOthers();
        File.SetUnixFileMode(closedParent ? parent : quarantine, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        var result = await RunAsNobodyAsync(["quarantine", .. verb.Split(' '), "--config", config.FilePath]);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Equal("", result.Stdout);
        Assert.Contains($"portcullis: quarantine {quarantine}: permission denied", result.Stderr);
    }

    [Fact]
    public async Task Quarantine_list_of_a_folder_not_made_yet_is_empty_and_exits_0()
    {
        config.Set("quarantine", "folder", Path.Combine(config.Root, "not-yet", "quarantine"));
        await File.WriteAllTextAsync(config.FilePath, config.Render());

        var result = await PortcullisBinary.RunAsync("quarantine", "list", "--config", config.FilePath);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("", result.Stdout + result.Stderr);
    }

    [Theory]
    [InlineData("portcullis ", "check-config quarantine queue reload run scan status version")]
    [InlineData("portcullis sc", "scan")]
    [InlineData("portcullis --v", "--version")]
    [InlineData("portcullis scan -", "--config --help --policy --recursive -c -h -r")]
    [InlineData("portcullis scan --r", "--recursive")]
    [InlineData("portcullis quarantine ", "delete list purge release show")]
    [InlineData("portcullis queue ", "delete flush hold list release show")]
    [InlineData("portcullis quarantine list --", "--config --help --json --since --virus")]
    [InlineData("portcullis quarantine release x --t", "--to")]
    [InlineData("portcullis scan ", "")]
    [InlineData("portcullis run --config ", "")]
    public async Task Bash_completion_completes_verbs_and_options(string line, string expected)
    {
        var script = Path.Combine(PortcullisBinary.RepositoryRoot()!, "rootfs/usr/share/bash-completion/completions/portcullis");
        var bin = Path.GetDirectoryName(Path.GetFullPath(PortcullisBinary.Require()))!;
        var words = line.EndsWith(' ') ? [.. line.Split(' ', StringSplitOptions.RemoveEmptyEntries), ""] : line.Split(' ');
        var program = """
            source "$1"
            complete -p portcullis
            COMP_LINE="$2"; COMP_POINT=${#COMP_LINE}; shift 2
            COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
            _portcullis
            printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort | tr '\n' ' '
            """;

        var result = await RunProcessAsync("bash", ["-c", program, "bash", script, line, .. words],
            ("PATH", bin + ":" + Environment.GetEnvironmentVariable("PATH")));

        Assert.True(result.ExitCode == 0, result.ToString());
        var (registration, replies) = (result.Stdout[..result.Stdout.IndexOf('\n')], result.Stdout[(result.Stdout.IndexOf('\n') + 1)..]);
        Assert.Equal("complete -o default -F _portcullis portcullis", registration);
        Assert.Equal(expected, replies.Trim());
    }

    // The test folder readable by others, so that a test can run the binary as nobody.
    private void OpenToOthers()
    {
        const UnixFileMode open = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
            UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        foreach (var folder in Directory.EnumerateDirectories(config.Root, "*", SearchOption.AllDirectories).Append(config.Root))
        {
            File.SetUnixFileMode(folder, open);
        }

        foreach (var file in Directory.EnumerateFiles(config.Root, "*", SearchOption.AllDirectories))
        {
            File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }
    }

    private static Task<CliResult> RunAsNobodyAsync(params string[] arguments)
    {
        Assert.True(Environment.UserName == "root", "dropping privileges to nobody needs root (as CI runs)");
        return RunProcessAsync("setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", PortcullisBinary.Require(), .. arguments]);
    }

    private static Task<CliResult> RunProcessAsync(string file, string[] arguments, params (string Name, string Value)[] environment) =>
        PortcullisBinary.RunProcessAsync(file, arguments, environment);

    private static string Regex(string text) => System.Text.RegularExpressions.Regex.Escape(text);
}
