// Entry point of the one binary: everything is a verb of the command line.
// NativeAOT leaves RLIMIT_NOFILE's soft limit where it was (CoreCLR raises it): raise it first.
Portcullis.Appliance.Runtime.OpenFileLimit.RaiseToHard();
return await Portcullis.Appliance.Cli.CommandLine.RunAsync(args);
