namespace Portcullis.EndToEnd.Harness;

// One per-message log line of the gateway: space-separated key=value fields, values optionally
// in double quotes (session=3 from=<a@x> verdict=clean ...).
public sealed class LogRecord(IReadOnlyDictionary<string, string> fields, string line)
{
    public string Line { get; } = line;

    public string this[string key] => fields.TryGetValue(key, out var value)
        ? value
        : throw new KeyNotFoundException($"no field '{key}' in log line: {Line}");

    public string? Get(string key) => fields.GetValueOrDefault(key);

    // A message line is one that carries a verdict.
    public static LogRecord? TryParse(string line)
    {
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        var i = 0;
        while (i < line.Length)
        {
            while (i < line.Length && line[i] == ' ') i++;
            var equals = line.IndexOf('=', i);
            if (equals < 0) break;
            var key = line[i..equals];
            i = equals + 1;
            string value;
            if (i < line.Length && line[i] == '"')
            {
                var close = line.IndexOf('"', i + 1);
                close = close < 0 ? line.Length : close;
                value = line[(i + 1)..close];
                i = close + 1;
            }
            else
            {
                var space = line.IndexOf(' ', i);
                space = space < 0 ? line.Length : space;
                value = line[i..space];
                i = space;
            }

            fields[key.Trim()] = value;
        }

        return fields.ContainsKey("verdict") ? new LogRecord(fields, line) : null;
    }

    public override string ToString() => Line;
}
