using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Portcullis.Appliance.Configuration;

// The value syntaxes of portcullis.ini, as pure functions: sizes (512K, 50M, 1G; 1024-based, optional
// B), times (30s, 5m, 1h, 3d; bare = seconds), booleans, lists (commas and/or whitespace), listener
// endpoints (address:port[/flag...], IPv6 in brackets) and host names. No I/O, no error text
// beyond a short "problem" where one value can be wrong in several ways.
internal static class ConfigValues
{
    public static bool TryParseSize(string text, out long bytes)
    {
        bytes = 0;
        var span = text.AsSpan().Trim();
        if (span.Length > 0 && (span[^1] == 'b' || span[^1] == 'B'))
        {
            span = span[..^1];
        }

        long multiplier = 1;
        if (span.Length > 0)
        {
            switch (char.ToUpperInvariant(span[^1]))
            {
                case 'K': multiplier = 1L << 10; break;
                case 'M': multiplier = 1L << 20; break;
                case 'G': multiplier = 1L << 30; break;
            }

            if (multiplier != 1)
            {
                span = span[..^1];
            }
        }

        if (!TryParseDigits(span, out var number))
        {
            return false;
        }

        if (number > long.MaxValue / multiplier)
        {
            return false;
        }

        bytes = number * multiplier;
        return true;
    }

    public static bool TryParseTime(string text, out TimeSpan time)
    {
        time = default;
        var span = text.AsSpan().Trim();
        long unit = 1;
        if (span.Length > 0)
        {
            switch (char.ToLowerInvariant(span[^1]))
            {
                case 's': unit = 1; span = span[..^1]; break;
                case 'm': unit = 60; span = span[..^1]; break;
                case 'h': unit = 3600; span = span[..^1]; break;
                case 'd': unit = 86400; span = span[..^1]; break;
            }
        }

        // Keep clear of TimeSpan's range; callers apply their own, much smaller, bounds.
        if (!TryParseDigits(span, out var number) || number > int.MaxValue / 3600)
        {
            return false;
        }

        time = TimeSpan.FromSeconds(number * unit);
        return true;
    }

    public static bool TryParseBool(string text, out bool value)
    {
        switch (text.Trim().ToLowerInvariant())
        {
            case "yes" or "true" or "on" or "1":
                value = true;
                return true;
            case "no" or "false" or "off" or "0":
                value = false;
                return true;
            default:
                value = false;
                return false;
        }
    }

    public static string[] SplitList(string text) =>
        text.Split([',', ' ', '\t', '\r', '\n'], StringSplitOptions.RemoveEmptyEntries);

    // One mail server: host, host:port, an IPv4 or bare IPv6 address, [IPv6]:port (port null when
    // not given). The address comes back in its canonical text, without brackets.
    public static bool TryParseMailServer(string text, out MailServerAddress? server, out string problem)
    {
        server = null;
        problem = "";
        string host = text;
        string? port = null;
        if (text.StartsWith('['))
        {
            int close = text.IndexOf(']');
            if (close < 0)
            {
                problem = "'[' without ']'";
                return false;
            }
            host = text[1..close];
            var rest = text[(close + 1)..];
            if (rest.Length > 0)
            {
                if (rest[0] != ':')
                {
                    problem = $"unexpected '{rest}' after ']'";
                    return false;
                }
                port = rest[1..];
            }
            if (!IPAddress.TryParse(host, out _))
            {
                problem = $"'{host}' in brackets is not an IP address";
                return false;
            }
        }
        else if (text.Count(c => c == ':') == 1)
        {
            int colon = text.IndexOf(':');
            host = text[..colon];
            port = text[(colon + 1)..];
        }

        int? portNumber = null;
        if (port is not null)
        {
            if (!TryParsePort(port, out var p))
            {
                problem = $"port '{port}' is not a number from 1 to 65535";
                return false;
            }
            portNumber = p;
        }
        if (IPAddress.TryParse(host, out var address) && (host.Contains(':') || TryParseIPv4(host, out _)))
        {
            server = new MailServerAddress(address.ToString(), portNumber);
            return true;
        }
        if (IsHostName(host))
        {
            server = new MailServerAddress(host, portNumber);
            return true;
        }
        problem = $"'{host}' is neither an IP address nor a host name";
        return false;
    }

    // One listener: 0.0.0.0:25, [::]:25, 192.0.2.1:465/tls, [::1]:2525/proxy/tls.
    public static bool TryParseListenEndpoint(string text, out ListenEndpoint? endpoint, out string problem)
    {
        endpoint = null;
        var parts = text.Split('/');
        if (!TryParseEndPoint(parts[0], out var ipEndPoint, out problem))
        {
            return false;
        }

        var flags = new HashSet<string>(StringComparer.Ordinal);
        foreach (var part in parts.AsSpan(1))
        {
            var flag = part.ToLowerInvariant();
            if (flag is not (ListenEndpoint.TlsFlag or ListenEndpoint.ProxyFlag))
            {
                problem = $"unknown flag \"{part}\" (known flags: tls, proxy)";
                return false;
            }

            flags.Add(flag);
        }

        endpoint = new ListenEndpoint(ipEndPoint!, flags.Count == 0 ? ListenEndpoint.NoFlags : flags);
        return true;
    }

    // An address:port with no flags ([status] listen).
    public static bool TryParsePlainEndPoint(string text, out IPEndPoint? endPoint, out string problem) =>
        TryParseEndPoint(text.Trim(), out endPoint, out problem);

    private static bool TryParseEndPoint(string text, out IPEndPoint? endPoint, out string problem)
    {
        endPoint = null;
        string host;
        string port;
        if (text.StartsWith('['))
        {
            var close = text.IndexOf(']');
            if (close < 0 || close + 1 >= text.Length || text[close + 1] != ':')
            {
                problem = "an IPv6 address needs the form [address]:port";
                return false;
            }

            host = text[1..close];
            port = text[(close + 2)..];
            if (!IPAddress.TryParse(host, out var v6) || v6.AddressFamily != AddressFamily.InterNetworkV6)
            {
                problem = $"\"{host}\" is not an IPv6 address";
                return false;
            }

            return TryFinish(v6, port, out endPoint, out problem);
        }

        var colon = text.LastIndexOf(':');
        if (colon < 0)
        {
            problem = "no port";
            return false;
        }

        host = text[..colon];
        port = text[(colon + 1)..];
        if (host.Contains(':'))
        {
            problem = "an IPv6 address must be written in brackets, as in [::1]:25";
            return false;
        }

        if (!TryParseIPv4(host, out var v4))
        {
            problem = $"\"{host}\" is not an IP address";
            return false;
        }

        return TryFinish(v4!, port, out endPoint, out problem);
    }

    private static bool TryFinish(IPAddress address, string portText, out IPEndPoint? endPoint, out string problem)
    {
        endPoint = null;
        if (!TryParsePort(portText, out var port))
        {
            problem = $"port \"{portText}\" is not a number from 1 to 65535";
            return false;
        }

        endPoint = new IPEndPoint(address, port);
        problem = "";
        return true;
    }

    public static bool TryParsePort(string text, out int port)
    {
        port = 0;
        if (!TryParseDigits(text.AsSpan().Trim(), out var number) || number is < 1 or > 65535)
        {
            return false;
        }

        port = (int)number;
        return true;
    }

    // Dotted quad only: IPAddress.TryParse would also take "10" or "127.1".
    public static bool TryParseIPv4(string text, out IPAddress? address)
    {
        address = null;
        return text.Count(c => c == '.') == 3
            && IPAddress.TryParse(text, out address)
            && address.AddressFamily == AddressFamily.InterNetwork;
    }

    // An address literal (IPv4 dotted quad, IPv6 bare or in brackets); returns it without brackets.
    public static bool TryParseIPAddress(string text, out IPAddress? address)
    {
        if (text.StartsWith('[') && text.EndsWith(']'))
        {
            text = text[1..^1];
            address = null;
            return text.Contains(':') && IPAddress.TryParse(text, out address);
        }

        if (text.Contains(':'))
        {
            return IPAddress.TryParse(text, out address) && address.AddressFamily == AddressFamily.InterNetworkV6;
        }

        return TryParseIPv4(text, out address);
    }

    // RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, at most 253 characters.
    public static bool IsHostName(string text)
    {
        if (text.Length is 0 or > 253)
        {
            return false;
        }

        var name = text.EndsWith('.') ? text[..^1] : text;
        foreach (var label in name.Split('.'))
        {
            if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-')
            {
                return false;
            }

            foreach (var c in label)
            {
                if (!char.IsAsciiLetterOrDigit(c) && c != '-')
                {
                    return false;
                }
            }
        }

        // An all-numeric last label is an IPv4 literal gone wrong, not a name.
        var last = name[(name.LastIndexOf('.') + 1)..];
        return !last.All(char.IsAsciiDigit);
    }

    // local@domain, printable ASCII or UTF-8 without spaces, brackets or quotes; the domain a host name or [literal].
    public static bool IsMailAddress(string text)
    {
        var at = text.LastIndexOf('@');
        if (at <= 0 || at == text.Length - 1 || text.Length > 254) return false;
        var local = text[..at];
        var domain = text[(at + 1)..];
        if (local.Any(c => char.IsControl(c) || char.IsWhiteSpace(c) || c is '<' or '>' or '"' or ',' or ';' or '(' or ')' or '[' or ']' or '\\' or '@'))
            return false;
        return IsHostName(domain) || (domain.StartsWith('[') && TryParseIPAddress(domain, out _)) || (domain.StartsWith('[') && domain.EndsWith(']') && TryParseIPv4(domain[1..^1], out _));
    }

    public static bool TryParseInteger(string text, out long value) => TryParseDigits(text.AsSpan().Trim(), out value);

    private static bool TryParseDigits(ReadOnlySpan<char> span, out long value)
    {
        value = 0;
        foreach (var c in span)
        {
            if (!char.IsAsciiDigit(c))
            {
                return false;
            }
        }

        return span.Length > 0 && long.TryParse(span, NumberStyles.None, CultureInfo.InvariantCulture, out value);
    }

    // The shortest exact form: 52428800 → 50M, 1536 → 1536.
    public static string FormatSize(long bytes)
    {
        if (bytes != 0)
        {
            if (bytes % (1L << 30) == 0) return (bytes >> 30).ToString(CultureInfo.InvariantCulture) + "G";
            if (bytes % (1L << 20) == 0) return (bytes >> 20).ToString(CultureInfo.InvariantCulture) + "M";
            if (bytes % (1L << 10) == 0) return (bytes >> 10).ToString(CultureInfo.InvariantCulture) + "K";
        }

        return bytes.ToString(CultureInfo.InvariantCulture);
    }

    public static string FormatTime(TimeSpan time)
    {
        var seconds = (long)time.TotalSeconds;
        if (seconds > 86400 && seconds % 86400 == 0) return (seconds / 86400).ToString(CultureInfo.InvariantCulture) + "d";
        if (seconds != 0 && seconds % 3600 == 0) return (seconds / 3600).ToString(CultureInfo.InvariantCulture) + "h";
        if (seconds != 0 && seconds % 60 == 0) return (seconds / 60).ToString(CultureInfo.InvariantCulture) + "m";
        return seconds.ToString(CultureInfo.InvariantCulture) + "s";
    }
}
