// qmail/ucspi-tcp access rules (tcprules(1), tcpserver(1)), read natively in both forms: the
// text rules ("192.168.1.:allow,RELAYCLIENT=\"\"", "10.1.0.0-255:deny", ":allow") and the
// compiled cdb. tcpserver's lookup order without TCPREMOTEINFO/TCPREMOTEHOST (we do no ident
// or reverse DNS): the address itself, then shorter and shorter prefixes ending with a dot,
// then the empty rule. The first rule found wins; of duplicate addresses, the first written.
// cdb data: "D" is deny; otherwise a sequence of "+VAR=value\0" (set) and "-VAR\0" (unset).
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Portcullis.Appliance.Access;

internal sealed record TcpRule(string Address, bool Deny, IReadOnlyDictionary<string, string?> Environment)
{
    public bool RelayClient => Environment.TryGetValue("RELAYCLIENT", out var value) && value is not null;

    public override string ToString() => $"{(Address.Length == 0 ? "(default)" : Address)}:{(Deny ? "deny" : "allow")}";
}

internal sealed class TcpRules
{
    private readonly Func<string, TcpRule?> _find;

    private TcpRules(Func<string, TcpRule?> find) => _find = find;

    public static TcpRules FromCdb(byte[] data)
    {
        var cdb = new Cdb(data);
        return new TcpRules(key => cdb.Find(Encoding.Latin1.GetBytes(key)) is { } value ? Decode(key, value) : null);
    }

    // Throws FormatException naming the line for anything tcprules itself would refuse.
    public static TcpRules FromText(string text)
    {
        var rules = new Dictionary<string, TcpRule>(StringComparer.Ordinal);
        int lineNumber = 0;
        foreach (var rawLine in text.Split('\n'))
        {
            lineNumber++;
            var line = rawLine.TrimEnd('\r');
            if (line.Length == 0 || line[0] == '#') continue;
            int colon = line.IndexOf(':');
            if (colon < 0) throw new FormatException($"line {lineNumber}: expected address:instructions");
            var address = line[..colon];
            var rule = ParseInstructions(line[(colon + 1)..], lineNumber);
            foreach (var key in ExpandRange(address, lineNumber))
                rules.TryAdd(key, rule with { Address = key });
        }
        return new TcpRules(key => rules.GetValueOrDefault(key));
    }

    public TcpRule? Match(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        foreach (var key in LookupKeys(address))
        {
            if (_find(key) is { } rule) return rule;
        }
        return null;
    }

    // "1.2.3.4", "1.2.3.", "1.2.", "1.", "". IPv6 (ucspi-tcp-ipv6): the compressed address, then
    // its prefixes ending with ':'.
    internal static IEnumerable<string> LookupKeys(IPAddress address)
    {
        string text = address.ToString();
        yield return text;
        char separator = address.AddressFamily == AddressFamily.InterNetworkV6 ? ':' : '.';
        for (int i = text.Length - 2; i >= 0; i--)
        {
            if (text[i] == separator) yield return text[..(i + 1)];
        }
        yield return "";
    }

    private static TcpRule Decode(string key, byte[] value)
    {
        if (value.Length > 0 && value[0] == (byte)'D') return new TcpRule(key, true, new Dictionary<string, string?>());
        var env = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var item in Encoding.Latin1.GetString(value).Split('\0', StringSplitOptions.RemoveEmptyEntries))
        {
            if (item[0] == '+')
            {
                int eq = item.IndexOf('=');
                if (eq > 1) env[item[1..eq]] = item[(eq + 1)..];
            }
            else if (item[0] == '-') env[item[1..]] = null;
        }
        return new TcpRule(key, false, env);
    }

    private static TcpRule ParseInstructions(string text, int line)
    {
        var parts = new List<string>();
        // Split on commas outside quoted values: VAR="a,b" keeps its comma.
        int start = 0;
        for (int i = 0; i <= text.Length; i++)
        {
            if (i == text.Length || text[i] == ',')
            {
                parts.Add(text[start..i]);
                start = i + 1;
            }
            else if (text[i] == '=' && i + 1 < text.Length)
            {
                char quote = text[i + 1];
                int close = text.IndexOf(quote, i + 2);
                if (close < 0) throw new FormatException($"line {line}: unterminated value after {text[start..(i + 1)]}");
                i = close;
            }
        }
        bool deny = parts[0] switch
        {
            "deny" => true,
            "allow" => false,
            _ => throw new FormatException($"line {line}: instructions must begin with allow or deny"),
        };
        var env = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var part in parts.Skip(1))
        {
            if (part.Length == 0) continue;
            int eq = part.IndexOf('=');
            if (eq < 0) { env[part] = null; continue; }
            if (eq == 0) throw new FormatException($"line {line}: variable without a name");
            env[part[..eq]] = part.Length >= eq + 3 ? part[(eq + 2)..^1] : "";
        }
        return new TcpRule("", deny, env);
    }

    // "1.2.3.37-53" → 1.2.3.37 … 1.2.3.53; "10.2-3." → 10.2., 10.3. One range per rule, as tcprules.
    internal static IEnumerable<string> ExpandRange(string address, int line)
    {
        int dash = address.IndexOf('-');
        if (dash < 0 || address.StartsWith('=') || address.Contains('@')) return [address];
        int begin = address.LastIndexOf('.', dash) + 1;
        int end = dash + 1;
        while (end < address.Length && char.IsAsciiDigit(address[end])) end++;
        if (!int.TryParse(address.AsSpan(begin, dash - begin), System.Globalization.NumberStyles.None, null, out int low)
            || !int.TryParse(address.AsSpan(dash + 1, end - dash - 1), System.Globalization.NumberStyles.None, null, out int high)
            || (end < address.Length && address[end] != '.'))
            throw new FormatException($"line {line}: bad address range {address}");
        string prefix = address[..begin], suffix = address[end..];
        return Enumerable.Range(low, Math.Max(0, high - low + 1)).Select(n => prefix + n + suffix);
    }
}
