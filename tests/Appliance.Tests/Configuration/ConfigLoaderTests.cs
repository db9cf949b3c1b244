using System.Net;
using Portcullis.Appliance.Configuration;
using Portcullis.SmtpCore.Protocol;
using Xunit;

using static Portcullis.Appliance.Tests.Configuration.IniText;

namespace Portcullis.Appliance.Tests.Configuration;

// ConfigLoader end to end on INI text: defaults, every key, every kind of bad value, names, loops.
public sealed class ConfigLoaderTests
{
    [Fact]
    public void EmptyFileGivesDefaults()
    {
        var config = Load("");
        Assert.Equal(Source, config.SourcePath);

        var g = config.General;
        Assert.Equal(["0.0.0.0:25", "[::]:25"], g.Interfaces.Select(i => i.ToString()));
        Assert.All(g.Interfaces, i => Assert.Empty(i.Flags));
        Assert.Equal(Dns.GetHostName(), g.Hostname);
        Assert.Equal("127.0.0.1", g.SmtpServerAddress);
        Assert.Equal(2525, g.SmtpServerPort);
        Assert.Equal(TimeSpan.FromMinutes(5), g.SmtpServerTimeout);
        Assert.Equal("/var/lib/portcullis/tmp", g.TempFolder);
        Assert.Equal("/var/spool/portcullis", g.QueueFolder);

        var s = config.Scan;
        Assert.Equal("/var/lib/clamav", s.DatabaseFolder);
        Assert.Equal(TimeSpan.FromMinutes(2), s.Timeout);
        Assert.Equal(ScanErrorAction.Tempfail, s.OnError);
        Assert.Equal(Math.Clamp(Environment.ProcessorCount, 1, 256), s.ScannerThreads);
        Assert.Equal(0, s.QueueLength);  // no cap: a message waits for a scanner up to timeout
        Assert.Equal(400L << 20, s.MaxScanSize);
        Assert.Equal(100L << 20, s.MaxFileSize);
        Assert.Equal(17, s.MaxRecursion);
        Assert.Equal(10000, s.MaxFiles);
        Assert.True(s.AlertExceedsMax);

        var l = config.Limits;
        Assert.Equal(50L << 20, l.MaxMessageSize);
        Assert.Equal(1000, l.MaxRecipients);
        Assert.Equal(2048, l.MaxLineLength);
        Assert.Equal(10, l.MaxErrors);
        Assert.Equal(TimeSpan.FromMinutes(5), l.CommandTimeout);
        Assert.Equal(TimeSpan.FromMinutes(3), l.DataTimeout);
        Assert.Equal(8L << 20, l.MemoryThreshold);
        Assert.Equal(512L << 10, l.StreamThreshold);
        Assert.Equal(BareNewlinePolicy.Normalize, l.BareNewline);
        Assert.Null(l.MemoryBudget);  // auto

        Assert.Equal("", config.Log.Folder);
    }

    [Fact]
    public void DefaultsPropertyMatchesEmptyFile()
    {
        var fromFile = Load("");
        var defaults = GatewayConfig.Defaults;
        Assert.Equal(fromFile.Scan, defaults.Scan);
        Assert.Equal(fromFile.Limits, defaults.Limits);
        Assert.Equal(fromFile.Log, defaults.Log);
        Assert.Equal(fromFile.General.Hostname, defaults.General.Hostname);
        Assert.Equal(fromFile.General.Interfaces.Select(i => i.ToString()), defaults.General.Interfaces.Select(i => i.ToString()));
    }

    [Fact]
    public void CommentsAndEmptySectionsAreFine()
    {
        var config = Load("""
            ; a comment
            # another
            [general]
            [scan]

            [limits]
            [log]
            """);
        Assert.Equal(2525, config.General.SmtpServerPort);
    }

    [Fact]
    public void EveryKeyParses()
    {
        var config = Load("""
            [general]
            interfaces = 192.0.2.1:2525, [2001:db8::1]:465/tls 10.0.0.1:25/proxy
            hostname = mx1.example.com
            smtp_server_address = mail.internal.example
            smtp_server_port = 10025
            smtp_server_timeout = 90
            temp_folder = /srv/tmp/
            queue_folder = /srv/queue

            [scan]
            database_folder = /srv/clamav
            timeout = 45s
            on_error = pass
            scanner_threads = 3
            queue_length = 100
            max_scan_size = 1G
            max_file_size = 0
            max_recursion = 5
            max_files = 20
            alert_exceeds_max = yes

            [limits]
            max_message_size = 20MB
            max_recipients = 50
            max_line_length = 512
            max_errors = 3
            command_timeout = 1h
            data_timeout = 10m
            memory_threshold = 512k
            bare_newline = reject
            memory_budget = 256M
            stream_threshold = 0

            [log]
            folder = /var/log/portcullis
            """);

        var g = config.General;
        Assert.Equal(["192.0.2.1:2525", "[2001:db8::1]:465/tls", "10.0.0.1:25/proxy"], g.Interfaces.Select(i => i.ToString()));
        Assert.True(g.Interfaces[1].Tls);
        Assert.False(g.Interfaces[1].Proxy);
        Assert.True(g.Interfaces[2].Proxy);
        Assert.Equal("mx1.example.com", g.Hostname);
        Assert.Equal("mail.internal.example", g.SmtpServerAddress);
        Assert.Equal(10025, g.SmtpServerPort);
        Assert.Equal(TimeSpan.FromSeconds(90), g.SmtpServerTimeout);
        Assert.Equal("/srv/tmp", g.TempFolder);
        Assert.Equal("/srv/queue", g.QueueFolder);

        var s = config.Scan;
        Assert.Equal("/srv/clamav", s.DatabaseFolder);
        Assert.Equal(TimeSpan.FromSeconds(45), s.Timeout);
        Assert.Equal(ScanErrorAction.Pass, s.OnError);
        Assert.Equal(3, s.ScannerThreads);
        Assert.Equal(100, s.QueueLength);
        Assert.Equal(1L << 30, s.MaxScanSize);
        Assert.Equal(0, s.MaxFileSize);
        Assert.Equal(5, s.MaxRecursion);
        Assert.Equal(20, s.MaxFiles);
        Assert.True(s.AlertExceedsMax);

        var l = config.Limits;
        Assert.Equal(20L << 20, l.MaxMessageSize);
        Assert.Equal(50, l.MaxRecipients);
        Assert.Equal(512, l.MaxLineLength);
        Assert.Equal(3, l.MaxErrors);
        Assert.Equal(TimeSpan.FromHours(1), l.CommandTimeout);
        Assert.Equal(TimeSpan.FromMinutes(10), l.DataTimeout);
        Assert.Equal(512L << 10, l.MemoryThreshold);
        Assert.Equal(BareNewlinePolicy.Reject, l.BareNewline);
        Assert.Equal(256L << 20, l.MemoryBudget);
        Assert.Equal(0, l.StreamThreshold);

        Assert.Equal("/var/log/portcullis", config.Log.Folder);
    }

    [Fact]
    public void KeysAndSectionsAreCaseInsensitive()
    {
        var config = Load("""
            [GENERAL]
            SMTP_Server_Port = 2600
            [Limits]
            Bare_Newline = REJECT
            """);
        Assert.Equal(2600, config.General.SmtpServerPort);
        Assert.Equal(BareNewlinePolicy.Reject, config.Limits.BareNewline);
    }

    [Fact]
    public void QuotedValuesAreUnquoted()
    {
        var config = Load("""
            [general]
            hostname = "gw.example.org"
            """);
        Assert.Equal("gw.example.org", config.General.Hostname);
    }

    [Theory]
    [InlineData("scanner_threads =")]
    [InlineData("scanner_threads = auto")]
    public void ScannerThreadsEmptyOrAutoMeansOnePerCpu(string line)
    {
        var config = Load("[scan]\n" + line);
        Assert.Equal(Math.Clamp(Environment.ProcessorCount, 1, 256), config.Scan.ScannerThreads);
    }

    [Fact]
    public void EmptyHostnameMeansThisMachine()
    {
        Assert.Equal(Dns.GetHostName(), Load("[general]\nhostname =").General.Hostname);
    }

    [Theory]
    [InlineData("::1", "::1")]
    [InlineData("[::1]", "::1")]
    [InlineData("192.0.2.7", "192.0.2.7")]
    [InlineData("relay.example.net", "relay.example.net")]
    public void ServerAddressTakesAddressesAndNames(string value, string expected)
    {
        Assert.Equal(expected, Load($"[general]\nsmtp_server_address = {value}").General.SmtpServerAddress);
    }

    // Each bad value yields exactly one error naming file, section, key, value and the expectation.
    [Theory]
    [InlineData("general", "interfaces", "0.0.0.0", "a list of address:port entries")]
    [InlineData("general", "interfaces", "0.0.0.0:0", "a list of address:port entries")]
    [InlineData("general", "interfaces", "0.0.0.0:65536", "a list of address:port entries")]
    [InlineData("general", "interfaces", "::1:25", "a list of address:port entries")]
    [InlineData("general", "interfaces", "[::1]25", "a list of address:port entries")]
    [InlineData("general", "interfaces", "[127.0.0.1]:25", "a list of address:port entries")]
    [InlineData("general", "interfaces", "mail.example.com:25", "a list of address:port entries")]
    [InlineData("general", "interfaces", "10.1:25", "a list of address:port entries")]
    [InlineData("general", "interfaces", "0.0.0.0:465/ssl", "a list of address:port entries")]
    [InlineData("general", "interfaces", "0.0.0.0:465/", "a list of address:port entries")]
    [InlineData("general", "interfaces", "\"\"", "a list of address:port entries")]
    [InlineData("general", "hostname", "bad_name.example", "a host name")]
    [InlineData("general", "hostname", "-x.example", "a host name")]
    [InlineData("general", "smtp_server_address", "no such host", "an IP address or a host name")]
    [InlineData("general", "smtp_server_address", "300.1.1.1", "an IP address or a host name")]
    [InlineData("general", "smtp_server_port", "0", "a TCP port number from 1 to 65535")]
    [InlineData("general", "smtp_server_port", "65536", "a TCP port number from 1 to 65535")]
    [InlineData("general", "smtp_server_port", "smtp", "a TCP port number from 1 to 65535")]
    [InlineData("general", "smtp_server_timeout", "5x", "a time such as 30s, 5m or 1h")]
    [InlineData("general", "smtp_server_timeout", "0", "from 1s to 24h")]
    [InlineData("general", "smtp_server_timeout", "25h", "from 1s to 24h")]
    [InlineData("general", "temp_folder", "tmp", "an absolute folder path")]
    [InlineData("general", "queue_folder", "\"\"", "an absolute folder path")]
    [InlineData("scan", "database_folder", "./clamav", "an absolute folder path")]
    [InlineData("scan", "timeout", "-1", "a time such as 30s, 5m or 1h")]
    [InlineData("scan", "timeout", "1.5m", "a time such as 30s, 5m or 1h")]
    [InlineData("scan", "on_error", "accept", "one of tempfail, pass")]
    [InlineData("scan", "scanner_threads", "0", "a whole number from 1 to 256")]
    [InlineData("scan", "scanner_threads", "257", "a whole number from 1 to 256")]
    [InlineData("scan", "queue_length", "-1", "a whole number from 0 to 100000")]
    [InlineData("scan", "max_scan_size", "400X", "a size such as 512K, 50M or 1G")]
    [InlineData("scan", "max_file_size", "1T", "a size such as 512K, 50M or 1G")]
    [InlineData("scan", "max_recursion", "many", "a whole number from 0 to 1000")]
    [InlineData("scan", "max_files", "1e4", "a whole number from 0 to")]
    [InlineData("scan", "alert_exceeds_max", "maybe", "yes or no")]
    [InlineData("limits", "max_message_size", "12Q", "a size such as 512K, 50M or 1G")]
    [InlineData("limits", "max_message_size", "0", "greater than 0")]
    [InlineData("limits", "max_recipients", "0", "a whole number from 1 to 1000000")]
    [InlineData("limits", "max_line_length", "511", "a whole number from 512 to")]
    [InlineData("limits", "max_errors", "ten", "a whole number from 1 to")]
    [InlineData("limits", "command_timeout", "5 m", "a time such as 30s, 5m or 1h")]
    [InlineData("limits", "data_timeout", "3d", "a time such as 30s, 5m or 1h")]
    [InlineData("limits", "memory_threshold", "-8M", "a size such as 512K, 50M or 1G")]
    [InlineData("limits", "stream_threshold", "soon", "a size such as 512K, 50M or 1G")]
    [InlineData("limits", "bare_newline", "strip", "one of normalize, reject")]
    [InlineData("limits", "memory_budget", "lots", "a size such as 512K, 50M or 1G (0 for no limit; empty or auto for 1/8 of the memory)")]
    [InlineData("limits", "memory_budget", "-1G", "a size such as 512K, 50M or 1G")]
    [InlineData("log", "folder", "logs", "an absolute folder path")]
    public void BadValueIsReportedWithFileSectionKeyValueAndExpectation(string section, string key, string value, string expected)
    {
        var error = SingleError($"[{section}]\n{key} = {value}");
        var shown = value == "\"\"" ? "" : value;
        Assert.StartsWith($"{Source}: [{section}] {key} = \"{shown}\": ", error);
        var expectation = error.IndexOf("expected ", StringComparison.Ordinal);
        Assert.True(expectation > 0, error);
        Assert.Contains(expected, error[expectation..], StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("auto", null)]
    [InlineData("", null)]
    [InlineData("0", 0L)]
    [InlineData("1G", 1L << 30)]
    public void MemoryBudgetIsAutoASizeOrZeroForNoLimit(string value, long? expected)
    {
        Assert.Equal(expected, Load($"[limits]\nmemory_budget = {value}\n").Limits.MemoryBudget);
    }

    [Fact]
    public void ErrorMessageHasTheDocumentedShape()
    {
        var error = SingleError("[limits]\nmax_message_size = 12Q");
        Assert.Equal($"{Source}: [limits] max_message_size = \"12Q\": expected a size such as 512K, 50M or 1G, greater than 0", error);
    }

    [Fact]
    public void AllErrorsAreCollected()
    {
        var errors = Errors("""
            [general]
            smtp_server_port = 0
            colour = blue
            [scan]
            on_error = ignore
            [limits]
            max_message_size = huge
            [extras]
            x = 1
            """);
        Assert.Equal(5, errors.Count);
        var exception = Assert.Throws<ConfigException>(() => Load("[general]\nsmtp_server_port = 0\n[scan]\ntimeout = x"));
        Assert.Equal(string.Join(Environment.NewLine, exception.Errors), exception.Message);
    }

    [Fact]
    public void UnknownKeyListsTheKnownKeys()
    {
        var error = SingleError("[scan]\nmax_size = 10M");
        Assert.Equal(
            $"{Source}: [scan] unknown key \"max_size\" (known keys: database_folder, timeout, on_error, scanner_threads, queue_length, max_scan_size, max_file_size, max_recursion, max_files, alert_exceeds_max, scratch_folder, action, action_pua, action_heuristics, action_phishing, action_unofficial, action_banned, tag_subject_prefix, banned_extensions, banned_content_types, encrypted_archives, banned_types, reload_check_interval, reload_memory, max_definitions_age)",
            error);
    }

    [Fact]
    public void UnknownSectionIsReportedEvenWhenEmpty()
    {
        Assert.Equal(
            $"{Source}: unknown section [bogus] (known sections: general, scan, limits, log, quarantine, notification, relay, auth, tls, status, queue)",
            SingleError("[bogus]\nlisten = 127.0.0.1:8025\n"));
    }

    [Fact]
    public void KeyOutsideAnySectionIsReported()
    {
        var error = SingleError("hostname = mx.example.com\n[general]\n");
        Assert.Contains("\"hostname\" is outside any section", error, StringComparison.Ordinal);
        Assert.StartsWith(Source + ": ", error);
    }

    [Fact]
    public void NestedSectionKeysAreUnknown()
    {
        var errors = Errors("[general:tls]\ncert = /x\n");
        Assert.Contains(errors, e => e.Contains("unknown section [general:tls]", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("[general] unknown key \"tls:cert\"", StringComparison.Ordinal));
    }

    [Fact]
    public void DuplicateKeyIsAnError()
    {
        var error = SingleError("[general]\nhostname = a.example\nHOSTNAME = b.example\n");
        Assert.StartsWith(Source + ": ", error);
        Assert.Contains("duplicate", error, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void MalformedLineIsAnError()
    {
        var error = SingleError("[general]\nthis line has no equals sign\n");
        Assert.StartsWith(Source + ": ", error);
        Assert.Contains("this line has no equals sign", error, StringComparison.Ordinal);
    }

    [Fact]
    public void ValuesInErrorsAreEscaped()
    {
        var error = SingleError("[limits]\nmax_errors = a\"b\\c\n");
        Assert.Contains("max_errors = \"a\\\"b\\\\c\":", error, StringComparison.Ordinal);
    }

    [Fact]
    public void EachBadInterfaceEntryIsReported()
    {
        var errors = Errors("[general]\ninterfaces = 0.0.0.0:25/tls, nonsense, [::]:99999, 0.0.0.0:2/xyz\n");
        Assert.Equal(3, errors.Count);
        Assert.All(errors, e => Assert.StartsWith($"{Source}: [general] interfaces = \"0.0.0.0:25/tls, nonsense, [::]:99999, 0.0.0.0:2/xyz\": ", e));
        Assert.Contains(errors, e => e.Contains("entry \"nonsense\"", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("port \"99999\"", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("unknown flag \"xyz\"", StringComparison.Ordinal));
    }

    [Fact]
    public void DuplicateListenerIsReported()
    {
        var error = SingleError("[general]\ninterfaces = 0.0.0.0:25 0.0.0.0:25/tls\n");
        Assert.Contains("0.0.0.0:25 is listed twice", error, StringComparison.Ordinal);
    }

    [Fact]
    public void InterfacesAcceptIPv6FlagsAndAnySeparators()
    {
        var config = Load("[general]\ninterfaces = [::1]:2525/proxy/TLS,[fe80::1]:25\t127.0.0.1:587 ,, 0.0.0.0:465/tls/tls\n");
        var interfaces = config.General.Interfaces;
        Assert.Equal(4, interfaces.Count);
        Assert.Equal(new IPEndPoint(IPAddress.IPv6Loopback, 2525), interfaces[0].EndPoint);
        Assert.Equal(new HashSet<string> { "proxy", "tls" }, interfaces[0].Flags);
        Assert.Equal("[::1]:2525/proxy/tls", interfaces[0].ToString());
        Assert.Equal(IPAddress.Parse("fe80::1"), interfaces[1].EndPoint.Address);
        Assert.Equal(587, interfaces[2].EndPoint.Port);
        Assert.Single(interfaces[3].Flags);
    }

    [Theory]
    [InlineData("0.0.0.0:25", "127.0.0.1", "25")]
    [InlineData("0.0.0.0:25", "localhost", "25")]
    [InlineData("[::]:25", "::1", "25")]
    [InlineData("[::]:25", "127.0.0.1", "25")]
    [InlineData("192.0.2.10:2525", "192.0.2.10", "2525")]
    [InlineData("127.0.0.1:2525", "localhost", "2525")]
    [InlineData("0.0.0.0:2525", "0.0.0.0", "2525")]
    [InlineData("0.0.0.0:25", "::ffff:127.0.0.1", "25")]
    public void ForwardingToOwnListenerIsALoop(string interfaces, string address, string port)
    {
        var error = SingleError($"[general]\ninterfaces = {interfaces}\nsmtp_server_address = {address}\nsmtp_server_port = {port}\n");
        Assert.StartsWith($"{Source}: [general] smtp_server_address = \"{address}\", smtp_server_port = \"{port}\": ", error);
        Assert.Contains("mail would loop", error, StringComparison.Ordinal);
        Assert.Contains("expected", error, StringComparison.Ordinal);
    }

    [Fact]
    public void ForwardingToOwnHostnameOnAWildcardListenerIsALoop()
    {
        var error = SingleError("[general]\nhostname = gw.example.com\nsmtp_server_address = GW.example.com\nsmtp_server_port = 25\n");
        Assert.Contains("own listener 0.0.0.0:25", error, StringComparison.Ordinal);
    }

    [Fact]
    public void LoopWithDefaultPortSaysSo()
    {
        var error = SingleError("[general]\ninterfaces = 0.0.0.0:2525\n");
        Assert.Contains("smtp_server_address = 127.0.0.1 (default), smtp_server_port = 2525 (default)", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("0.0.0.0:25", "127.0.0.1", "2525")]
    [InlineData("192.0.2.10:25", "127.0.0.1", "25")]
    [InlineData("127.0.0.1:25", "::1", "25")]
    [InlineData("0.0.0.0:25", "mail.example.net", "25")]
    [InlineData("0.0.0.0:25", "198.51.100.200", "25")]
    public void OtherTargetsAreNoLoop(string interfaces, string address, string port)
    {
        Load($"[general]\ninterfaces = {interfaces}\nsmtp_server_address = {address}\nsmtp_server_port = {port}\n");
    }

    [Fact]
    public void LoopCheckUsesTheMachinesAddresses()
    {
        var general = new GeneralSection
        {
            Interfaces = [new ListenEndpoint(new IPEndPoint(IPAddress.Any, 25), ListenEndpoint.NoFlags)],
            SmtpServerAddress = "10.9.8.7",
            SmtpServerPort = 25,
        };
        Assert.NotNull(ConfigLoader.FindForwardLoop(general, new HashSet<IPAddress> { IPAddress.Parse("10.9.8.7") }));
        Assert.Null(ConfigLoader.FindForwardLoop(general, new HashSet<IPAddress>()));
    }

    [Fact]
    public void MissingFileCannotBeRead()
    {
        var path = Path.Combine(Path.GetTempPath(), "portcullis-missing-" + Guid.NewGuid().ToString("N") + ".ini");
        var exception = Assert.Throws<ConfigException>(() => ConfigLoader.Load(path));
        Assert.StartsWith($"cannot read {path}: ", Assert.Single(exception.Errors));
    }

    [Fact]
    public void LoadReadsAFileAndNamesItInErrors()
    {
        var path = Path.Combine(Path.GetTempPath(), "portcullis-test-" + Guid.NewGuid().ToString("N") + ".ini");
        try
        {
            File.WriteAllText(path, "[general]\nsmtp_server_port = 2626\n");
            Assert.Equal(2626, ConfigLoader.Load(path).General.SmtpServerPort);
            Assert.Equal(path, ConfigLoader.Load(path).SourcePath);

            File.WriteAllText(path, "[general]\nsmtp_server_port = x\n");
            var error = Assert.Single(Assert.Throws<ConfigException>(() => ConfigLoader.Load(path)).Errors);
            Assert.StartsWith($"{path}: [general] smtp_server_port = \"x\"", error);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("max_file_size")]
    [InlineData("max_scan_size")]
    public void A_scan_limit_below_the_message_size_limit_is_an_error(string key)
    {
        string other = key == "max_file_size" ? "max_scan_size" : "max_file_size";
        var error = SingleError($"[limits]\nmax_message_size = 200M\n[scan]\n{key} = 100M\n{other} = 0");
        Assert.Contains($"[scan] {key}", error);
        Assert.Contains("max_message_size", error);
        Assert.Contains("unscanned", error);
    }

    [Fact]
    public void A_scan_limit_of_zero_means_no_limit_and_covers_any_message()
    {
        var config = Load("[limits]\nmax_message_size = 2G\n[scan]\nmax_file_size = 0\nmax_scan_size = 0");
        Assert.Equal(2L << 30, config.Limits.MaxMessageSize);
    }

    [Fact]
    public void Scratch_folder_defaults_to_empty_and_takes_an_absolute_path()
    {
        Assert.Equal("", Load("").Scan.ScratchFolder);
        Assert.Equal("/run/portcullis/scan", Load("[scan]\nscratch_folder = /run/portcullis/scan").Scan.ScratchFolder);
        Assert.Contains("scratch_folder", SingleError("[scan]\nscratch_folder = relative/dir"));
    }
}

// The access sections: [relay], [auth], [tls] and the access keys of [general] and [limits].
public sealed class AccessConfigTests
{
    [Fact]
    public void DefaultsTrustOnlyLoopbackAndOfferNoAuthOrTls()
    {
        var config = Load("");
        Assert.True(config.Relay.TrustedNetworks.Contains(IPAddress.Parse("127.0.0.9")));
        Assert.True(config.Relay.TrustedNetworks.Contains(IPAddress.IPv6Loopback));
        Assert.False(config.Relay.TrustedNetworks.Contains(IPAddress.Parse("10.0.0.1")));
        Assert.Empty(config.Relay.LocalDomains);
        Assert.False(config.Auth.Enabled);
        // TLS by default only where Debian's snakeoil pair is readable (ConfigChecksTests).
        Assert.Equal(TlsSection.DebianDefault(), config.Tls);
        Assert.False(Load("[tls]\ncertificate =\nkey =").Tls.Enabled);
        Assert.Equal(SmtpServerTlsMode.None, config.General.SmtpServerTls);
        Assert.Equal(2000, config.Limits.MaxConnections);
        Assert.Equal(20, config.Limits.MaxConnectionsPerIp);
    }

    [Fact]
    public void EveryAccessKeyIsRead()
    {
        var config = Load("""
            [general]
            proxy_trusted = 10.0.0.0/8 2001:db8::/32
            smtp_server_tls = required
            smtp_server_tls_verify = no
            smtp_server_ca_file = /etc/ca.pem
            [limits]
            max_connections = 7
            max_connections_per_ip = 0
            [relay]
            local_domains = Example.ORG., .sub.example.net
            local_domains_file = /etc/portcullis/domains
            trusted_networks = 192.168.0.0/16
            rules_file = /etc/tcp.smtp.cdb
            pop_before_smtp_file = /var/lib/pop/ips
            pop_before_smtp_ttl = 10m
            [auth]
            passwd_file = /etc/portcullis/passwd
            allow_plaintext = yes
            max_failures = 3
            failure_window = 1m
            failure_delay = 0
            [tls]
            certificate = /etc/cert.pem
            key = /etc/key.pem
            """);
        Assert.True(config.General.ProxyTrusted.Contains(IPAddress.Parse("10.1.2.3")));
        Assert.Equal(SmtpServerTlsMode.Required, config.General.SmtpServerTls);
        Assert.False(config.General.SmtpServerTlsVerify);
        Assert.Equal("/etc/ca.pem", config.General.SmtpServerCaFile);
        Assert.Equal(7, config.Limits.MaxConnections);
        Assert.Equal(0, config.Limits.MaxConnectionsPerIp);
        Assert.Equal(["example.org", ".sub.example.net"], config.Relay.LocalDomains);
        Assert.Equal("/etc/tcp.smtp.cdb", config.Relay.RulesFile);
        Assert.Equal(TimeSpan.FromMinutes(10), config.Relay.PopBeforeSmtpTtl);
        Assert.Equal(TimeSpan.Zero, config.Auth.FailureDelay);
        Assert.Equal(3, config.Auth.MaxFailures);
        Assert.True(config.Tls.Enabled);
    }

    [Theory]
    [InlineData("[relay]\ntrusted_networks = 10.1.2.3/8", "[relay] trusted_networks")]
    [InlineData("[relay]\ntrusted_networks = 10.0.0.0/33", "[relay] trusted_networks")]
    [InlineData("[relay]\nlocal_domains = exa_mple.org", "[relay] local_domains")]
    [InlineData("[relay]\nrules_file = relative/path", "[relay] rules_file")]
    [InlineData("[general]\nsmtp_server_tls = maybe", "[general] smtp_server_tls")]
    [InlineData("[auth]\nfailure_delay = 5m", "[auth] failure_delay")]
    [InlineData("[tls]\ncertificate = /etc/cert.pem", "[tls] certificate and key")]
    [InlineData("[auth]\npasswd_file = /etc/passwd.portcullis\n[tls]\ncertificate =\nkey =", "[auth] is enabled but AUTH is offered only after TLS")]
    [InlineData("[auth]\npasswd_file = /etc/p\ndownstream = yes\nallow_plaintext = yes", "[auth] passwd_file and downstream")]
    public void BadAccessValuesNameTheKey(string ini, string expected)
    {
        var error = SingleError(ini);
        Assert.StartsWith(Source + ": ", error);
        Assert.Contains(expected, error);
    }
}
