namespace Portcullis.Appliance.Configuration;

// Every problem found in a configuration file, reported together so an operator fixes them in one go.
// Each entry already names the file, section, key, bad value and what was expected.
public sealed class ConfigException : Exception
{
    public ConfigException(IReadOnlyList<string> errors)
        : base(string.Join(Environment.NewLine, errors))
    {
        Errors = errors;
    }

    public ConfigException(string error)
        : this([error])
    {
    }

    public IReadOnlyList<string> Errors { get; }
}
